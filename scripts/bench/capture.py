"""Benchmark: capture throughput per broker for N messages of 1 KiB (default 20,000), beside a
raw client drain loop on the same broker in the same run (target ratio >= 0.7), and the peak
RSS of the capture process for a larger DLQ (default 100,000 messages, target < 300 MB).

The raw loops are what an operator would write by hand: RabbitMQ consume + ack multiple per
500; SQS receive 10 + delete batch 10; Kafka consume 500 + synchronous commit (reading by direct
partition assignment, as the adapter does, so neither side waits for a group join). Capture does
the same reading plus a committed row per message before each remove.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import pika
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.bench.common import bench_database, report, run_measured  # noqa: E402

BODY = (b'{"order": 1, "pad": "' + b"x" * 1000)[:1021] + b'"}\n'  # 1 KiB


# ----------------------------------------------------------------------------- RabbitMQ
def rabbit_connection() -> pika.BlockingConnection:
    params = pika.URLParameters(os.environ["LOCAL_RABBITMQ_URL"])
    params.credentials = pika.PlainCredentials(
        os.environ["LOCAL_RABBITMQ_USERNAME"], os.environ["LOCAL_RABBITMQ_PASSWORD"]
    )
    return pika.BlockingConnection(params)


def _rabbit_channel():
    connection = rabbit_connection()
    return connection, connection.channel()


class Rabbit:
    kind = "rabbitmq"
    batch = 500

    def create(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        connection, channel = _rabbit_channel()
        channel.queue_declare(name, durable=True)
        connection.close()
        return name

    def fill(self, name: str, count: int) -> None:
        """Publish without confirms (fast), then wait until the queue holds them all."""
        connection, channel = _rabbit_channel()
        props = pika.BasicProperties(delivery_mode=2, headers={"x-exception-class": "TimeoutError"})
        for _ in range(count):
            channel.basic_publish("", name, BODY, props)
        deadline = time.monotonic() + 120
        while channel.queue_declare(name, passive=True).method.message_count < count:
            assert time.monotonic() < deadline, "RabbitMQ did not take every message"
            time.sleep(0.2)
        connection.close()

    def raw_drain(self, name: str, count: int) -> None:
        connection, channel = _rabbit_channel()
        channel.basic_qos(prefetch_count=self.batch)
        got, pending = 0, 0
        for method, _props, _body in channel.consume(name, inactivity_timeout=1):
            if method is None:
                break
            got += 1
            pending += 1
            if pending == self.batch or got == count:
                channel.basic_ack(method.delivery_tag, multiple=True)
                pending = 0
            if got == count:
                break
        channel.cancel()
        connection.close()
        assert got == count, f"raw drain read {got} of {count}"

    def dlq_args(self, name: str) -> list[str]:
        return ["--broker", "local-rabbitmq", "--address", name, "--batch", str(self.batch)]

    def delete(self, name: str) -> None:
        connection, channel = _rabbit_channel()
        channel.queue_delete(name)
        connection.close()


# ----------------------------------------------------------------------------- SQS
class Sqs:
    kind = "sqs"
    batch = 100

    def __init__(self) -> None:
        self.client = boto3.client(
            "sqs",
            endpoint_url=os.environ["LOCAL_SQS_ENDPOINT_URL"],
            region_name=os.environ["LOCAL_SQS_REGION"],
            aws_access_key_id=os.environ["LOCAL_SQS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["LOCAL_SQS_SECRET_ACCESS_KEY"],
        )

    def create(self) -> str:
        return self.client.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]

    def fill(self, url: str, count: int) -> None:
        text = BODY.decode()
        for start in range(0, count, 10):
            entries = [{"Id": str(i), "MessageBody": text} for i in range(min(10, count - start))]
            self.client.send_message_batch(QueueUrl=url, Entries=entries)

    def raw_drain(self, url: str, count: int) -> None:
        got = 0
        while got < count:
            messages = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not messages:
                break
            self.client.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            got += len(messages)
        assert got == count, f"raw drain read {got} of {count}"

    def dlq_args(self, url: str) -> list[str]:
        return ["--broker", "local-sqs", "--address", url, "--batch", str(self.batch)]

    def delete(self, url: str) -> None:
        self.client.delete_queue(QueueUrl=url)


# ----------------------------------------------------------------------------- Kafka
class Kafka:
    kind = "kafka"
    batch = 500

    def __init__(self) -> None:
        self.servers = os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"]
        self.admin = AdminClient({"bootstrap.servers": self.servers})

    def create(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        for future in self.admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
            future.result(timeout=10)
        return name

    def fill(self, topic: str, count: int) -> None:
        producer = Producer({"bootstrap.servers": self.servers, "linger.ms": 5, "acks": "all"})
        for _ in range(count):
            while True:
                try:
                    producer.produce(topic, BODY, headers=[("x-exception-class", b"TimeoutError")])
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(60) == 0

    def raw_drain(self, topic: str, count: int) -> None:
        consumer = Consumer({"bootstrap.servers": self.servers, "group.id": f"raw-{uuid.uuid4().hex[:8]}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "session.timeout.ms": 6000})  # fmt: skip
        # Direct assignment, as the console's adapter reads: no group join in either measurement.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got, deadline = 0, time.monotonic() + 120
        while got < count and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(self.batch, timeout=1) if not m.error()]
            if messages:
                got += len(messages)
                consumer.commit(asynchronous=False)
        consumer.close()
        assert got == count, f"raw drain read {got} of {count}"

    def dlq_args(self, topic: str) -> list[str]:
        return [
            "--broker",
            "local-kafka",
            "--address",
            topic,
            "--group",
            f"capture-{topic}",
            "--batch",
            str(self.batch),
        ]

    def delete(self, topic: str) -> None:
        for future in self.admin.delete_topics([topic]).values():
            future.result(timeout=10)


def _capture(env: dict[str, str], broker, name: str, count: int, tag: str) -> tuple[float, float, float]:
    """Capture with `manage.py capture`: (pass seconds, wall seconds with process start, peak RSS MB).
    The pass's own start and finish times exclude interpreter and Django start-up (~0.6 s)."""
    dlq_name = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
    run_measured(["dlq", "add", "--name", dlq_name, "--interval", "0", *broker.dlq_args(name)], env)
    wall, rss = run_measured(["capture", dlq_name, "--max", str(count)], env)
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        seconds, captured = conn.execute(
            "SELECT extract(epoch FROM p.finished_at - p.started_at), p.captured FROM recovery_capturepass p "
            "JOIN recovery_deadletterqueue d ON d.id = p.dlq_id WHERE d.name = %s",
            [dlq_name],
        ).fetchone()
    assert captured == count, f"captured {captured} of {count}"
    return float(seconds), wall, rss


def main(count: int, rss_count: int) -> list[str]:
    lines: list[str] = []
    with bench_database() as env:
        with tempfile.TemporaryDirectory() as tmp:  # the local-* brokers (and throwaway demo users)
            run_measured(["seed_demo", "--credentials-file", f"{tmp}/credentials"], env)
        for broker in (Rabbit(), Kafka(), Sqs()):
            name = broker.create()
            try:
                broker.fill(name, count)
                start = time.perf_counter()
                broker.raw_drain(name, count)
                raw = count / (time.perf_counter() - start)
                broker.fill(name, count)
                seconds, wall, rss = _capture(env, broker, name, count, broker.kind)
                rate = count / seconds
                report(lines, f"capture_{broker.kind}_raw_drain_rate", raw, "msg/s")
                report(lines, f"capture_{broker.kind}_rate", rate, "msg/s")
                report(lines, f"capture_{broker.kind}_ratio", rate / raw, "x")
                report(lines, f"capture_{broker.kind}_wall_rate_with_startup", count / wall, "msg/s")
                report(lines, f"capture_{broker.kind}_peak_rss", rss, "MB")
            finally:
                broker.delete(name)
        if rss_count:
            broker = Rabbit()
            name = broker.create()
            try:
                broker.fill(name, rss_count)
                seconds, _wall, rss = _capture(env, broker, name, rss_count, "rss")
                report(lines, "capture_rabbitmq_large_messages", rss_count, "messages")
                report(lines, "capture_rabbitmq_large_rate", rss_count / seconds, "msg/s")
                report(lines, "capture_rabbitmq_large_peak_rss", rss, "MB")
            finally:
                broker.delete(name)
    return lines


if __name__ == "__main__":
    main(
        int(os.environ.get("BENCH_CAPTURE_MESSAGES", "20000")),
        int(os.environ.get("BENCH_CAPTURE_RSS_MESSAGES", "100000")),
    )
