"""Kafka demo apps: a Spring Kafka orders listener and a Kafka Connect JDBC sink, both reading ``<prefix>-orders``.

Kafka has no broker-side dead-lettering: the frameworks publish failures themselves, so these apps do
exactly what those frameworks do.

- The orders listener (group ``<prefix>-orders-app``) plays Spring Kafka's
  ``DeadLetterPublishingRecoverer``: each failure goes to ``<prefix>-orders.DLT``, same partition,
  original key/value/headers plus the ``kafka_dlt-*`` headers (partition as a 4-byte big-endian int,
  offset and timestamp as 8-byte big-endian longs), then the offsets are committed.
- The JDBC sink (group ``connect-<prefix>-orders-jdbc-sink``) plays Kafka Connect with
  ``errors.tolerance=all`` and ``errors.deadletterqueue.context.headers.enable=true``: converter and
  put failures go to ``<prefix>-connect.dlq`` with the ``__connect.errors.*`` headers.

Every producer uses ``batch.num.messages=1``: Tansu's watermarks are wrong for batched produce.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from scripts.demo.apps import AppFailure, handle_order, jdbc_sink_put
from scripts.demo.common import DEFAULT_TIMEOUT, DlqReport, SeedError, check_flow_state, require_env, wait_for_depth
from scripts.demo.mix import DemoMessage, kombu_envelope, order_mix
from scripts.demo.stacks import connect_error, spring_error

PARTITIONS = 3
SESSION_TIMEOUT_MS = 6000  # Tansu holds a group join for about half of it


@dataclass(frozen=True)
class KafkaNames:
    """Topics and consumer groups of one demo prefix."""

    prefix: str

    @property
    def orders(self) -> str:
        return f"{self.prefix}-orders"

    @property
    def dlt(self) -> str:
        return f"{self.prefix}-orders.DLT"

    @property
    def connect_dlq(self) -> str:
        return f"{self.prefix}-connect.dlq"

    @property
    def app_group(self) -> str:
        return f"{self.prefix}-orders-app"

    @property
    def connector(self) -> str:
        return f"{self.prefix}-orders-jdbc-sink"

    @property
    def connect_group(self) -> str:
        return f"connect-{self.connector}"

    @property
    def capture_group(self) -> str:
        return f"{self.prefix}-dlq-capture"

    @property
    def topics(self) -> list[str]:
        return [self.orders, self.dlt, self.connect_dlq]

    @property
    def groups(self) -> list[str]:
        return [self.app_group, self.connect_group, self.capture_group]


def _config() -> dict[str, Any]:
    return {"bootstrap.servers": require_env("LOCAL_KAFKA_BOOTSTRAP_SERVERS")}


def _producer() -> Producer:
    return Producer(
        {
            **_config(),
            "acks": "all",
            "batch.num.messages": 1,
            "linger.ms": 0,
            "message.max.bytes": 4 * 1024 * 1024,  # the 1 MiB poison plus its dead-letter headers
            "partitioner": "murmur2_random",  # the Java client's partitioner
        }
    )


class _Deliveries:
    """Delivery reports of one producer; :meth:`flush` raises if any message was not confirmed."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.errors: list[str] = []

    def report(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(f"{message.topic()}: {error}")

    def flush(self, timeout: float = 30.0) -> None:
        left = self.producer.flush(timeout)
        if left or self.errors:
            raise SeedError(f"Kafka did not confirm {left + len(self.errors)} messages: {self.errors[:3]}")


def remove_kafka(prefix: str) -> None:
    """Delete the demo topics and consumer groups of ``prefix`` (missing ones are fine)."""
    names = KafkaNames(prefix)
    admin = AdminClient(_config())
    for future in admin.delete_topics(names.topics, operation_timeout=10).values():
        _ignore(future, KafkaError.UNKNOWN_TOPIC_OR_PART)
    for future in admin.delete_consumer_groups(names.groups, request_timeout=10).values():
        _ignore(future, KafkaError.GROUP_ID_NOT_FOUND)
    deadline = time.monotonic() + 10
    while set(names.topics) & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise SeedError(f"Kafka topics of prefix {prefix!r} still listed 10 s after their deletion")
        time.sleep(0.1)


def _ignore(future: Any, code: int) -> None:
    try:
        future.result()
    except KafkaException as exc:
        if exc.args[0].code() != code:
            raise


def _create_topics(names: KafkaNames) -> None:
    admin = AdminClient(_config())
    topics = [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1) for topic in names.topics[:2]]
    topics.append(NewTopic(names.connect_dlq, num_partitions=1, replication_factor=1))
    for future in admin.create_topics(topics, operation_timeout=10).values():
        _ignore(future, KafkaError.TOPIC_ALREADY_EXISTS)
    deadline = time.monotonic() + 10
    while not set(names.topics) <= set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise SeedError(f"Kafka topics {names.topics} not listed 10 s after their creation")
        time.sleep(0.1)


def topic_depth(consumer: Consumer, topic: str) -> int:
    """Messages in ``topic``: the sum of high minus low watermarks over its partitions."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    total = 0
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        total += high - low
    return total


def _record_headers(message: DemoMessage) -> list[tuple[str, bytes]]:
    headers = {
        "event-type": message.event_type,
        "correlation-id": message.correlation_id,
        "message-id": message.message_id,
        "content-type": message.content_type,
        **{name: str(value) for name, value in message.headers.items()},
    }
    return [(name, value.encode("utf-8")) for name, value in headers.items()]


def _publish(names: KafkaNames, messages: list[DemoMessage]) -> None:
    """The producer: the mix on ``<prefix>-orders``, keyed by order id (Celery as kombu's envelope)."""
    producer = _producer()
    deliveries = _Deliveries(producer)
    for message in messages:
        if message.celery is not None:
            # kombu's Kafka transport carries everything in the value; no record headers.
            envelope = kombu_envelope(message, routing_key="orders")
            producer.produce(names.orders, key=envelope.key, value=envelope.body, on_delivery=deliveries.report)
        else:
            producer.produce(
                names.orders,
                key=message.key,
                value=message.body,
                headers=_record_headers(message),
                on_delivery=deliveries.report,
            )
    deliveries.flush()


def _decoded(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers or []}


Recoverer = Callable[[Producer, _Deliveries, Message, AppFailure], None]


def _listen(
    names: KafkaNames, group: str, handler: Callable[..., None], recover: Recoverer, count: int, deadline: float
) -> None:
    """Run one consumer app over ``count`` records: failures go to ``recover``, then offsets are committed."""
    consumer = Consumer(
        {
            **_config(),
            "group.id": group,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = _producer()
    deliveries = _Deliveries(producer)
    try:
        consumer.subscribe([names.orders])
        handled = 0
        while handled < count:
            record = consumer.poll(0.5)
            if record is None:
                if time.monotonic() > deadline:
                    raise SeedError(f"timed out consuming {names.orders} as {group}: handled {handled} of {count}")
                continue
            if record.error() is not None:
                raise SeedError(f"consuming {names.orders} as {group} failed: {record.error()}")
            try:
                handler(record.value() or b"", _decoded(record.headers()))
            except AppFailure as failure:
                recover(producer, deliveries, record, failure)
            handled += 1
        deliveries.flush()  # dead letters confirmed before the offsets move past them
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def _spring_recoverer(names: KafkaNames) -> Recoverer:
    """Spring Kafka's DeadLetterPublishingRecoverer: same partition of ``<topic>.DLT``, kafka_dlt-* headers."""

    def recover(producer: Producer, deliveries: _Deliveries, record: Message, failure: AppFailure) -> None:
        value = record.value() or b""
        error = spring_error(failure, body_length=len(value))
        timestamp_type, timestamp = record.timestamp()
        headers = [
            *(record.headers() or []),
            ("kafka_dlt-exception-fqcn", error.fqcn.encode()),
            ("kafka_dlt-exception-cause-fqcn", error.cause_fqcn.encode()),
            ("kafka_dlt-exception-message", error.message.encode()),
            ("kafka_dlt-exception-stacktrace", error.stack.encode()),
            ("kafka_dlt-original-topic", record.topic().encode()),
            ("kafka_dlt-original-partition", struct.pack(">i", record.partition())),
            ("kafka_dlt-original-offset", struct.pack(">q", record.offset())),
            ("kafka_dlt-original-timestamp", struct.pack(">q", timestamp)),
            (
                "kafka_dlt-original-timestamp-type",
                b"LogAppendTime" if timestamp_type == TIMESTAMP_LOG_APPEND_TIME else b"CreateTime",
            ),
            ("kafka_dlt-original-consumer-group", names.app_group.encode()),
        ]
        producer.produce(
            names.dlt,
            key=record.key(),
            value=value,
            partition=record.partition(),
            headers=headers,
            on_delivery=deliveries.report,
        )

    return recover


def _connect_recoverer(names: KafkaNames) -> Recoverer:
    """Kafka Connect's DeadLetterQueueReporter: original record plus __connect.errors.* headers."""

    def recover(producer: Producer, deliveries: _Deliveries, record: Message, failure: AppFailure) -> None:
        error = connect_error(failure)
        context = {
            "topic": record.topic(),
            "partition": str(record.partition()),
            "offset": str(record.offset()),
            "connector.name": names.connector,
            "task.id": "0",
            "stage": error.stage,
            "class.name": error.class_name,
            "exception.class.name": error.exception_class,
            "exception.message": error.message,
            "exception.stacktrace": error.stack,
        }
        headers = [*(record.headers() or []), *((f"__connect.errors.{k}", v.encode()) for k, v in context.items())]
        producer.produce(
            names.connect_dlq, key=record.key(), value=record.value(), headers=headers, on_delivery=deliveries.report
        )

    return recover


def seed_kafka(prefix: str = "demo", *, reset: bool = False, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Create the orders topic and its two dead-letter topics and let both apps fail part of the mix.

    Idempotent: when both dead-letter topics hold their expected records nothing is done. ``reset``
    deletes the topics and the demo's consumer groups first. Raises SeedError naming the topic if a
    dead-letter topic is not filled in ``timeout``, or if the topics are in a partial state.
    """
    started = time.monotonic()
    deadline = started + timeout
    names = KafkaNames(prefix)
    messages = order_mix()
    try:
        if reset:
            remove_kafka(prefix)
        _create_topics(names)
        dlt = DlqReport(
            address=names.dlt,
            expected=sum(m.fails for m in messages),
            sources=[names.orders],
            replay_target=names.orders,
            extra={"metadata": "spring-dlt", "failed_group": names.app_group, "capture_group": names.capture_group},
        )
        connect = DlqReport(
            address=names.connect_dlq,
            expected=sum(m.sink_fails for m in messages),
            sources=[names.orders],
            replay_target=names.orders,
            extra={
                "metadata": "kafka-connect",
                "connector": names.connector,
                "failed_group": names.connect_group,
                "capture_group": names.capture_group,
            },
        )
        _seed(names, messages, dlt, connect, deadline)
    except KafkaException as exc:
        raise SeedError(
            f"Kafka at {require_env('LOCAL_KAFKA_BOOTSTRAP_SERVERS')} failed for {prefix!r}: {exc}"
        ) from exc
    return {
        "broker": "kafka",
        "bootstrap_servers": require_env("LOCAL_KAFKA_BOOTSTRAP_SERVERS"),
        "capture_group": names.capture_group,
        "topics": names.topics,
        "seeded": dlt.status == "seeded",
        "dlqs": [dlt.as_dict(), connect.as_dict()],
        "elapsed_s": round(time.monotonic() - started, 2),
    }


def _seed(names: KafkaNames, messages: list[DemoMessage], dlt: DlqReport, connect: DlqReport, deadline: float) -> None:
    """Publish the mix and run both apps, unless the dead-letter topics already hold their records."""
    probe = Consumer({**_config(), "group.id": f"{names.prefix}-demo-seeder", "enable.auto.commit": False})
    try:
        states = {
            report.address: check_flow_state(report.address, topic_depth(probe, report.address), report.expected)
            for report in (dlt, connect)
        }
        if set(states.values()) == {"present"}:
            for report in (dlt, connect):
                report.status, report.depth = "present", topic_depth(probe, report.address)
            return
        if "present" in states.values():
            empty = [address for address, state in states.items() if state == "empty"]
            raise SeedError(f"{', '.join(empty)} is empty while its sibling is full; pass reset=True (--reset)")
        leftover = topic_depth(probe, names.orders)
        if leftover:
            raise SeedError(
                f"{names.orders} already holds {leftover} records but its dead-letter topics are empty; "
                "pass reset=True (--reset) to start over"
            )
        _publish(names, messages)
        apps = [
            (names.app_group, handle_order, _spring_recoverer(names)),
            (names.connect_group, jdbc_sink_put, _connect_recoverer(names)),
        ]
        with ThreadPoolExecutor(max_workers=len(apps)) as pool:
            futures = [
                pool.submit(_listen, names, group, handler, recover, len(messages), deadline)
                for group, handler, recover in apps
            ]
            for future in futures:
                future.result()
        for report in (dlt, connect):
            remaining = max(deadline - time.monotonic(), 1.0)
            report.depth = wait_for_depth(
                report.address, lambda a=report.address: topic_depth(probe, a), report.expected, timeout=remaining
            )
    finally:
        probe.close()
