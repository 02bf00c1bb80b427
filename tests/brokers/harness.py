"""One harness per real broker for the contract suite: create a fresh DLQ (queue/topic) on the
broker and its rows, fill it with raw client calls (as the user's applications would), and
clean up. The code under test only ever speaks through the adapters."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import boto3
import pika
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from recovery.brokers.base import DlqAddress, Target
from recovery.models import Broker, BrokerKind, DeadLetterQueue
from tests.factories import DeadLetterQueueFactory, LocalBrokerFactory
from tests.namespace import unique

Message = tuple[bytes, dict[str, str]]
VISIBILITY_S = 5  # SqsHarness's broker's visibility timeout (seconds)


def _name(prefix: str) -> str:
    """A queue, topic, group or broker-row name of this pytest worker's own (tests/namespace.py)."""
    return unique(prefix)


class _Harness:
    broker: Broker

    def dlq_at(self, address: str, **extra) -> DeadLetterQueue:
        """The DLQ row of an existing queue or topic of this broker, named after it (an SQS queue
        URL's last part) and captured as its kind needs."""
        return DeadLetterQueueFactory(broker=self.broker, name=address.rsplit("/", 1)[-1], address=address, **extra)


class RabbitHarness(_Harness):
    kind = BrokerKind.RABBITMQ
    text_only = False

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.broker = LocalBrokerFactory(name=_name("rabbit"), kind=self.kind)

    def _channel(self):
        params = pika.URLParameters(os.environ["LOCAL_RABBITMQ_URL"])
        params.credentials = pika.PlainCredentials(
            os.environ["LOCAL_RABBITMQ_USERNAME"], os.environ["LOCAL_RABBITMQ_PASSWORD"]
        )
        connection = pika.BlockingConnection(params)
        return connection, connection.channel()

    def new_queue(self) -> str:
        name = _name("contract")
        connection, channel = self._channel()
        channel.queue_declare(name, durable=True)
        connection.close()
        self.queues.append(name)
        return name

    def make_dlq(self, **extra) -> DeadLetterQueue:
        return self.dlq_at(self.new_queue(), **extra)

    def fill(self, dlq: DeadLetterQueue, messages: list[Message]) -> None:
        connection, channel = self._channel()
        channel.confirm_delivery()
        for body, headers in messages:
            channel.basic_publish("", dlq.address, body, pika.BasicProperties(headers=headers, delivery_mode=2))
        connection.close()

    def target(self) -> Target:
        return Target(name="", routing_key=self.new_queue())

    def target_address(self, target: Target) -> DlqAddress:
        return DlqAddress(name=target.routing_key)

    def still_on_broker(self, dlq: DeadLetterQueue) -> int:
        connection, channel = self._channel()
        count = channel.queue_declare(dlq.address, passive=True).method.message_count
        connection.close()
        return count

    def cleanup(self) -> None:
        connection, channel = self._channel()
        for queue in self.queues:
            channel.queue_delete(queue)
        connection.close()


class SqsHarness(_Harness):
    kind = BrokerKind.SQS
    text_only = True  # SQS bodies are text

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.client = boto3.client(
            "sqs",
            endpoint_url=os.environ["LOCAL_SQS_ENDPOINT_URL"],
            region_name=os.environ["LOCAL_SQS_REGION"],
            aws_access_key_id=os.environ["LOCAL_SQS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["LOCAL_SQS_SECRET_ACCESS_KEY"],
        )
        # a short visibility timeout: a crashed capture's messages come back within seconds
        # (VISIBILITY_S); long enough that a pass slowed down by a loaded machine (parallel
        # test workers) removes what it received before it comes back
        self.broker = LocalBrokerFactory(
            name=_name("sqs"), kind=self.kind, extra_options={"visibility_timeout": VISIBILITY_S}
        )

    def new_queue(self) -> str:
        url = self.client.create_queue(QueueName=_name("contract"))["QueueUrl"]
        self.queues.append(url)
        return url

    def make_dlq(self, **extra) -> DeadLetterQueue:
        return self.dlq_at(self.new_queue(), **extra)

    def fill(self, dlq: DeadLetterQueue, messages: list[Message]) -> None:
        for start in range(0, len(messages), 10):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": body.decode("utf-8"),
                    "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in headers.items()},
                }
                for i, (body, headers) in enumerate(messages[start : start + 10])
            ]
            response = self.client.send_message_batch(QueueUrl=dlq.address, Entries=entries)
            assert not response.get("Failed"), response.get("Failed")

    def target(self) -> Target:
        return Target(name=self.new_queue())

    def target_address(self, target: Target) -> DlqAddress:
        return DlqAddress(name=target.name)

    def still_on_broker(self, dlq: DeadLetterQueue) -> int:
        attrs = self.client.get_queue_attributes(
            QueueUrl=dlq.address,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def cleanup(self) -> None:
        for url in self.queues:
            self.client.delete_queue(QueueUrl=url)


class KafkaHarness(_Harness):
    kind = BrokerKind.KAFKA
    text_only = False

    def __init__(self) -> None:
        self.servers = os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"]
        self.admin = AdminClient({"bootstrap.servers": self.servers})
        self.topics: list[str] = []
        self.broker = LocalBrokerFactory(name=_name("kafka"), kind=self.kind)

    def new_topic(self) -> str:
        name = _name("contract")
        for future in self.admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]).values():
            future.result(timeout=10)
        self.topics.append(name)
        return name

    def make_dlq(self, **extra) -> DeadLetterQueue:
        return self.dlq_at(self.new_topic(), **extra)

    def fill(self, dlq: DeadLetterQueue, messages: list[Message]) -> None:
        # Tansu reports wrong watermarks for batched produce (INFRA.md): one message per batch.
        producer = Producer({"bootstrap.servers": self.servers, "batch.num.messages": 1, "acks": "all"})
        for body, headers in messages:
            producer.produce(dlq.address, value=body, headers=list(headers.items()))
        assert producer.flush(30) == 0

    def target(self) -> Target:
        return Target(name=self.new_topic())

    def target_address(self, target: Target) -> DlqAddress:
        return DlqAddress(name=target.name, group=_name("reader"))

    def still_on_broker(self, dlq: DeadLetterQueue) -> int:
        """Kafka never removes on capture: count what a fresh group can still read."""
        consumer = Consumer(
            {"bootstrap.servers": self.servers, "group.id": _name("probe"), "auto.offset.reset": "earliest",
             "session.timeout.ms": 6000, "enable.auto.commit": False}
        )  # fmt: skip
        consumer.subscribe([dlq.address])
        count, deadline, idle_since = 0, time.monotonic() + 20, None
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, timeout=0.5) if not m.error()]
            count += len(batch)
            if batch:
                idle_since = time.monotonic()
            elif idle_since and time.monotonic() - idle_since > 1.5:
                break
        consumer.close()
        return count

    def cleanup(self) -> None:
        if self.topics:
            for future in self.admin.delete_topics(self.topics).values():
                with contextlib.suppress(Exception):  # best-effort cleanup of a test topic
                    future.result(timeout=10)


HARNESSES: dict[str, Callable[[], object]] = {
    "rabbitmq": RabbitHarness,
    "sqs": SqsHarness,
    "kafka": KafkaHarness,
}
