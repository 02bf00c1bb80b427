"""What an operator would write by hand to move N messages from one queue/topic to another on the
same broker, timed beside the console's replay (scripts/bench/replay.py), and RabbitMQ's shovel.

Each raw loop reads a batch from the source, publishes it to the target with the broker's
confirmation, and only then removes the batch from the source (as the console's replay records a
letter as published only once the broker confirmed it, invariant 2):
- RabbitMQ: consume with prefetch = batch, publish persistent + mandatory with every publisher
  confirm of the batch in flight (pipelined, not one at a time), wait for all, ack multiple.
- Kafka: consume a batch by direct assignment, produce it with an idempotent acks=all producer,
  flush, check every delivery report, commit synchronously.
- SQS: receive 10, SendMessageBatch 10 (each entry must succeed), DeleteMessageBatch 10.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pika
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from scripts.bench import capture
from scripts.bench.capture import BODY, rabbit_connection  # the same messages and clients as the capture bench

# ----------------------------------------------------------------------------- RabbitMQ


def rabbit_queue() -> str:
    name = f"bench-replay-{uuid.uuid4().hex[:8]}"
    connection = rabbit_connection()
    connection.channel().queue_declare(name, durable=True)
    connection.close()
    return name


def rabbit_depth(name: str) -> int:
    connection = rabbit_connection()
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    finally:
        connection.close()


def rabbit_fill(name: str, count: int) -> None:
    """Publish without confirms (fast), then wait until the queue holds them all."""
    connection = rabbit_connection()
    channel = connection.channel()
    props = pika.BasicProperties(delivery_mode=2, headers={"x-exception-class": "TimeoutError"})
    for _ in range(count):
        channel.basic_publish("", name, BODY, props)
    deadline = time.monotonic() + 120
    while channel.queue_declare(name, passive=True).method.message_count < count:
        assert time.monotonic() < deadline, "RabbitMQ did not take every message"
        time.sleep(0.1)
    connection.close()


def rabbit_delete(*names: str) -> None:
    if not names:
        return
    connection = rabbit_connection()
    channel = connection.channel()
    for name in names:
        channel.queue_delete(name)
    connection.close()


def rabbit_move(source: str, target: str, count: int, batch: int) -> None:
    """Consume a batch, publish it with all its confirms in flight, wait for them, ack multiple."""
    connection = rabbit_connection()
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=batch)
    publisher = connection.channel()
    # pika's BlockingChannel waits for each confirm in turn; its underlying channel pipelines them.
    impl = publisher._impl  # noqa: SLF001
    outstanding: set[int] = set()
    problems: list[str] = []

    def on_confirm(frame) -> None:
        tag, method = frame.method.delivery_tag, frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            problems.append(f"nack {tag}")
        if method.multiple:
            outstanding.difference_update([t for t in outstanding if t <= tag])
        else:
            outstanding.discard(tag)

    impl.confirm_delivery(on_confirm)
    impl.add_on_return_callback(lambda *_args: problems.append("returned"))
    connection.process_data_events(time_limit=0.05)  # confirm.select-ok
    got = 0
    for method, props, body in consumer.consume(source, inactivity_timeout=2):
        if method is None:
            break
        impl.basic_publish("", target, body, props, mandatory=True)
        got += 1
        outstanding.add(got)  # the publisher's delivery tags count 1, 2, ... on its channel
        if got % batch == 0 or got == count:
            deadline = time.monotonic() + 30
            while outstanding:
                assert time.monotonic() < deadline, "no publisher confirms"
                connection.process_data_events(time_limit=0.002)
            assert not problems, problems[:3]
            consumer.basic_ack(method.delivery_tag, multiple=True)
        if got == count:
            break
    consumer.cancel()
    connection.close()
    assert got == count, f"raw move read {got} of {count}"


def _management(method: str, path: str, body: dict | None = None) -> int:
    """One management HTTP API call; returns its status code."""
    url = os.environ["LOCAL_RABBITMQ_MANAGEMENT_URL"].rstrip("/") + path
    assert url.startswith(("http://", "https://")), url
    user = f"{os.environ['LOCAL_RABBITMQ_USERNAME']}:{os.environ['LOCAL_RABBITMQ_PASSWORD']}"
    data = json.dumps(body).encode() if body else None
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310 - http(s) only
    request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http(s) only
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def shovel_ready() -> None:
    """The shovel plugins, enabled on the running node when they are not yet (the node's own
    environment, as scripts/services.sh starts it: its node name, epmd port and plugins file)."""
    if _management("GET", "/api/shovels") == 200:
        return
    import subprocess

    from scripts.bench.common import ROOT

    subprocess.run(
        ["bash", "-c", 'source scripts/lib.sh; source <(sed -n "/^rabbit_dir=/p;/^rabbit_env()/,/^}/p" '
         'scripts/services.sh); rabbit_env; /usr/lib/rabbitmq/bin/rabbitmq-plugins enable --online rabbitmq_shovel '
         "rabbitmq_shovel_management"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while _management("GET", "/api/shovels") != 200:
        assert time.monotonic() < deadline, "the shovel plugin did not come up"
        time.sleep(0.5)


def shovel_move(source: str, target: str, count: int) -> float:
    """A dynamic shovel (ack-mode on-confirm, src-delete-after queue-length) from source to target;
    seconds from its creation until the target holds ``count`` and the source is empty."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    url = os.environ["LOCAL_RABBITMQ_URL"]
    value = {
        "src-protocol": "amqp091", "src-uri": url, "src-queue": source, "src-delete-after": "queue-length",
        "dest-protocol": "amqp091", "dest-uri": url, "dest-queue": target, "ack-mode": "on-confirm",
    }  # fmt: skip
    connection = rabbit_connection()
    channel = connection.channel()
    path = f"/api/parameters/shovel/{quote('/', safe='')}/{name}"
    start = time.perf_counter()
    status = _management("PUT", path, {"value": value})
    assert status in (201, 204), f"creating the shovel answered {status}"
    try:
        deadline = time.monotonic() + 120
        while True:
            moved = channel.queue_declare(target, passive=True).method.message_count
            left = channel.queue_declare(source, passive=True).method.message_count
            if moved >= count and left == 0:
                return time.perf_counter() - start
            assert time.monotonic() < deadline, f"the shovel moved {moved} of {count}"
            time.sleep(0.01)
    finally:
        connection.close()
        _management("DELETE", path)  # gone already when it deleted itself after the queue length


# ----------------------------------------------------------------------------- Kafka
class Kafka(capture.Kafka):
    """The capture bench's Kafka client (topics, fill) plus a move loop and a counter."""

    def topic(self) -> str:
        return self.create()

    def move(self, source: str, target: str, count: int, batch: int) -> None:
        consumer = Consumer({"bootstrap.servers": self.servers, "group.id": f"raw-{uuid.uuid4().hex[:8]}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
        consumer.assign([TopicPartition(source, 0, OFFSET_BEGINNING)])
        producer = Producer({"bootstrap.servers": self.servers, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5})  # fmt: skip
        errors: list[KafkaError] = []

        def delivered(err, _msg) -> None:
            if err is not None:
                errors.append(err)

        got, deadline = 0, time.monotonic() + 120
        while got < count and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(min(batch, count - got), timeout=1) if not m.error()]
            for message in messages:
                while True:
                    try:
                        producer.produce(target, message.value(), key=message.key(), headers=message.headers(),
                                         on_delivery=delivered)  # fmt: skip
                        break
                    except BufferError:
                        producer.poll(0.05)
            if messages:
                assert producer.flush(30) == 0 and not errors, errors[:3]
                consumer.commit(asynchronous=False)
                got += len(messages)
        consumer.close()
        assert got == count, f"raw move read {got} of {count}"

    def count(self, topic: str, expected: int) -> int:
        """Messages on the topic, read from the start until ``expected`` or 5 s without news (the
        broker's watermarks are not trusted on Tansu, see shared/INFRA.md)."""
        consumer = Consumer({"bootstrap.servers": self.servers, "group.id": f"count-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False})  # fmt: skip
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen, quiet = 0, time.monotonic() + 5
        while seen < expected and time.monotonic() < quiet:
            messages = [m for m in consumer.consume(10_000, timeout=0.5) if not m.error()]
            if messages:
                seen, quiet = seen + len(messages), time.monotonic() + 5
        consumer.close()
        return seen

    def delete(self, *topics: str) -> None:
        for future in self.admin.delete_topics(list(topics)).values():
            future.result(timeout=10)


# ----------------------------------------------------------------------------- SQS
class Sqs(capture.Sqs):
    """The capture bench's SQS client plus a threaded fill, a depth and a move loop."""

    def queue(self) -> str:
        return self.create()

    def depth(self, url: str) -> int:
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def fill(self, url: str, count: int) -> None:
        """Set-up only: 8 threads of SendMessageBatch (boto3 clients are thread-safe)."""
        text = BODY.decode()

        def send(start: int) -> None:
            entries = [{"Id": str(i), "MessageBody": text} for i in range(min(10, count - start))]
            assert not self.client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(0, count, 10)))

    def move(self, source: str, target: str, count: int) -> None:
        got = 0
        while got < count:
            messages = self.client.receive_message(
                QueueUrl=source, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                break
            entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)]
            for i, message in enumerate(messages):
                if message.get("MessageAttributes"):
                    entries[i]["MessageAttributes"] = message["MessageAttributes"]
            sent = self.client.send_message_batch(QueueUrl=target, Entries=entries)
            assert not sent.get("Failed") and len(sent["Successful"]) == len(entries), sent.get("Failed")
            self.client.delete_message_batch(
                QueueUrl=source,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            got += len(messages)
        assert got == count, f"raw move read {got} of {count}"

    def delete(self, *urls: str) -> None:
        for url in urls:
            self.client.delete_queue(QueueUrl=url)
