"""Kafka adapter (confluent-kafka). The only module that imports confluent_kafka, with
recovery.brokers.kafka_probe (the child process that reads the first record of many topics).

How the adapter Protocol maps onto Kafka:

- ``receive`` reads every partition of the topic by direct assignment, from the offsets committed
  for ``DlqAddress.group``: the group stores positions but the console never joins it. Capture
  passes of one DLQ never run at once, so there is nothing to coordinate, and reading starts at
  once: no join wait, no rebalance, and no group left stuck by a reader that died (Tansu keeps
  a dead member as the group's leader for good). One consumer per (topic, group) is kept for
  the adapter's life.
- ``remove`` commits past the removed messages, synchronously; ``release`` seeks back so the same
  consumer reads them again; ``close`` leaves the group without committing, so whatever was
  received and not removed is read again by the next reader of the group (invariant 1). A
  pipelined capture pass removes batch N while it already holds batch N+1: the commit stops at
  N+1's first offset, and librdkafka's own prefetch keeps the next batch coming meanwhile.
- ``depth`` is the group's lag.
- ``publish`` uses one idempotent producer with ``acks=all`` and counts a message as published
  only on a delivery report without error (invariant 2).
- The console never creates a topic implicitly: every client sets ``allow.auto.create.topics``
  to false (Tansu and Kafka honour it on metadata requests) and a missing topic is an error.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from recovery.brokers import kafka_probe
from recovery.brokers.base import (
    BrokerError,
    Candidate,
    DlqAddress,
    OutgoingMessage,
    Ping,
    PublishResult,
    ReceivedMessage,
    Target,
    json_safe,
)
from recovery.brokers.credentials import resolve_credentials
from recovery.brokers.timing import stopwatch

if TYPE_CHECKING:
    from recovery.models import Broker

# Client options an operator may set in Broker.options; secrets come only from credentials_ref.
# message.max.bytes: the producer default below allows large dead letters; an operator can match
# the broker's own limit instead.
_ALLOWED_OPTIONS = {"security.protocol", "sasl.mechanisms", "ssl.ca.location", "client.id", "message.max.bytes"}

# Kafka brokers refuse messages over ~1 MiB by default; the producer must not refuse them first,
# or a large dead letter could never be replayed to a broker configured to take it.
_PRODUCER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Errors reported through error_cb that mean no call can succeed until something changes.
_BROKER_DOWN_CODES = {KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION}
# Errors that retrying the same call cannot fix.
_PERMANENT_CODES = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


_TIMESTAMP_TYPES = {TIMESTAMP_CREATE_TIME: "create_time", TIMESTAMP_LOG_APPEND_TIME: "log_append_time"}

# Names of dead-letter topics, lower case: Spring (orders.DLT, orders-dlt), common suffixes and
# prefixes, and anything that says dead-letter. What is left once the marker is removed is the
# source topic, when a topic of that name exists.
_DLQ_SUFFIXES = (".dlt", "-dlt", ".dlq", "-dlq", "_dlq", ".dead-letter", "-dead-letter", "_dead-letter")
_DLQ_PREFIXES = ("dlq-", "dlq.", "dead-letter-", "dead-letter.", "dead-letter_")


@dataclass
class _Reader:
    """One consumer of a (topic, group) and, per partition, what it handed out and not yet removed.

    ``outstanding`` holds received offsets that are neither removed nor released; ``removed_upto``
    the highest removed offset + 1. Committing never passes an outstanding offset (invariant 1).
    """

    consumer: Any
    outstanding: dict[int, set[int]] = field(default_factory=dict)
    removed_upto: dict[int, int] = field(default_factory=dict)


class KafkaAdapter:
    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._readers: dict[tuple[str, str], _Reader] = {}
        self._producer: Any = None
        self._admin: Any = None
        # Set by librdkafka's error_cb: an outage (tells "nothing to read" from "broker away"), and
        # a fatal error, which only an idempotent producer raises here and which ends that producer.
        self._alarm: KafkaError | None = None
        self._producer_failed = False
        self._refusal_checked = False

    def client_config(self) -> dict[str, Any]:
        if not self.broker.endpoint:
            raise BrokerError("a Kafka broker needs bootstrap servers (host:port[,host:port])", permanent=True)
        if not self._refusal_checked:
            _refuse_when_every_server_refuses(self.broker.endpoint, self.timeout)
            self._refusal_checked = True
        config: dict[str, Any] = {
            "bootstrap.servers": self.broker.endpoint,
            "socket.timeout.ms": int(self.timeout * 1000),
            "socket.connection.setup.timeout.ms": int(self.timeout * 1000),
            # librdkafka would otherwise log every reconnect attempt of a down broker to stderr.
            "log_level": 0,
            "error_cb": self._on_client_error,
            # Reading, publishing or asking for metadata must never create a topic.
            "allow.auto.create.topics": False,
        }
        config.update({k: v for k, v in (self.broker.options or {}).items() if k in _ALLOWED_OPTIONS})
        creds = resolve_credentials(self.broker.credentials_ref, ("username", "password"))
        if creds:
            config["sasl.username"] = creds.get("username", "")
            config["sasl.password"] = creds.get("password", "")
        return config

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka reports a lost broker here, once per outage, not through the call that
        suffers it. Keep what says no call can succeed; the rest it retries by itself."""
        if error.fatal():
            self._producer_failed = True
        elif error.code() in _BROKER_DOWN_CODES:
            self._alarm = error

    def ping(self) -> Ping:
        admin = AdminClient(self.client_config())
        try:
            with stopwatch() as elapsed:
                metadata = admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach {self.broker.endpoint}: {exc.args[0].str()}") from None
        return Ping(
            latency_ms=elapsed[0],
            detail=f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)",
        )

    # -- reading -------------------------------------------------------------------------------

    def receive(self, address: DlqAddress, *, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages of the topic past the group's committed position,
        waiting at most ``wait_seconds`` for the first. Nothing is committed here: a message leaves
        the DLQ only through ``remove`` (invariant 1). An outage raises BrokerError rather than
        looking like an empty DLQ."""
        if max_messages < 1:
            return []
        reader = self._reader(address)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        batch: list[ReceivedMessage] = []
        while len(batch) < max_messages:
            remaining = max(0.0, deadline - time.monotonic())
            # Wait in short slices for the first message; once some arrived, take only what is
            # already fetched, so a half-full batch is not held back for the whole wait.
            polled = self._poll(reader, address, batch, max_messages, 0.0 if batch else min(remaining, 0.25))
            if batch:
                if not polled:
                    break
                continue
            if self._alarm is not None:
                self._check_alarm(reader, address)
            if remaining <= 0:
                break
        for message in batch:
            _topic, partition, offset = message.receipt
            reader.outstanding.setdefault(partition, set()).add(offset)
        return batch

    def _poll(
        self, reader: _Reader, address: DlqAddress, batch: list[ReceivedMessage], max_messages: int, timeout: float
    ) -> int:
        """One consume call into ``batch``; returns how many events it gave. Partition-EOF and
        max-poll-exceeded (the consumer rejoins by itself) are skipped; any other error hands this
        call's messages back (``release``) before raising, so none is skipped over."""
        try:
            polled = reader.consumer.consume(num_messages=max_messages - len(batch), timeout=timeout)
        except KafkaException as exc:
            self._give_back(reader, address, batch)
            raise _broker_error(f"cannot read {address.name}", exc.args[0]) from None
        error = None
        for msg in polled:
            err = msg.error()
            if err is None:
                batch.append(_received(msg))
            elif err.code() not in (KafkaError._PARTITION_EOF, KafkaError._MAX_POLL_EXCEEDED):
                error = error or err
        if error is not None:
            self._give_back(reader, address, batch)
            raise _broker_error(f"cannot read {address.name}", error)
        return len(polled)

    def remove(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Commit, synchronously, past these messages: per partition the highest offset + 1, held
        back to the lowest offset still received-and-not-removed, because a Kafka commit removes
        everything below it (invariant 1). A commit the broker refuses raises BrokerError."""
        if not messages:
            return
        reader = self._existing_reader(address, messages)
        positions: dict[int, int] = {}
        for message in messages:
            _topic, partition, offset = message.receipt
            reader.outstanding.get(partition, set()).discard(offset)
            reader.removed_upto[partition] = max(reader.removed_upto.get(partition, 0), offset + 1)
            positions[partition] = reader.removed_upto[partition]
        for partition in positions:
            left = reader.outstanding.get(partition)
            if left:
                positions[partition] = min(positions[partition], min(left))
        offsets = [TopicPartition(address.name, p, offset) for p, offset in sorted(positions.items())]
        try:
            committed = reader.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise _broker_error(f"cannot commit {address.name} for group {address.group}", exc.args[0]) from None
        refused = next((tp.error for tp in committed or [] if tp.error is not None), None)
        if refused is not None:
            raise _broker_error(f"cannot commit {address.name} for group {address.group}", refused)

    def release(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Seek each partition back to the lowest offset among these messages, so the next
        ``receive`` returns them again (messages after them too: capture is idempotent on the
        identity). A partition this consumer no longer owns needs nothing: its next owner starts
        from the committed offset, which is never past a message not removed."""
        if not messages:
            return
        reader = self._readers.get((address.name, address.group))
        if reader is not None:
            self._give_back(reader, address, messages)

    def depth(self, address: DlqAddress) -> int:
        """The group's lag: per partition, high watermark minus the committed offset (or minus the
        low watermark when the group committed nothing there).

        Tansu reports a wrong high watermark for batched produce (the last batch's base offset +
        1), so on Tansu this under-counts unless producers send one message per batch
        (``batch.num.messages=1``). Treat it as an estimate there; Kafka reports it exactly."""
        group = _require_group(address)
        admin = self._admin_client()
        partitions = self._topic_partitions(admin, address.name)
        tps = [TopicPartition(address.name, p) for p in partitions]
        try:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)], request_timeout=self.timeout
            )
            committed = {tp.partition: tp.offset for tp in futures[group].result().topic_partitions}
            lows = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, request_timeout=self.timeout)
            highs = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=self.timeout)
            lag = 0
            for tp in tps:
                low = lows[tp].result().offset
                high = highs[tp].result().offset
                done = committed.get(tp.partition, OFFSET_INVALID)
                lag += max(0, high - (max(done, low) if done >= 0 else low))
        except KafkaException as exc:
            raise _broker_error(f"cannot measure the lag of {group} on {address.name}", exc.args[0]) from None
        return lag

    def committed_offsets(self, address: DlqAddress) -> dict[int, int]:
        """The offsets consumer group ``address.group`` committed on topic ``address.name``, per
        partition (the next offset it will read; a partition it never committed is left out). The
        positive signal of replay verification (recovery.replay.evidence, issue 15)."""
        group = _require_group(address)
        admin = self._admin_client()
        tps = [TopicPartition(address.name, p) for p in self._topic_partitions(admin, address.name)]
        try:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, tps)], request_timeout=self.timeout
            )
            found = futures[group].result().topic_partitions
        except KafkaException as exc:
            raise _broker_error(f"cannot read the offsets of {group} on {address.name}", exc.args[0]) from None
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    # -- writing -------------------------------------------------------------------------------

    def prepare_publish(self, target: Target) -> None:
        """Start the producer and read the topic's metadata (a missing topic raises, as in publish)."""
        self._topic_partitions(self._producer_client(), target.name)

    def publish(self, target: Target, messages: list[OutgoingMessage]) -> list[PublishResult]:
        """Produce the batch with one idempotent ``acks=all`` producer and flush once; a message is
        confirmed only by a delivery report without error (invariant 2).

        A topic that does not exist raises BrokerError(permanent=True) before anything is sent:
        the console does not create topics. Headers and the key accept what ``receive`` hands out
        (text, ``{"$base64": ...}`` for raw bytes, a list for a repeated header), so a dead
        letter's headers replay byte for byte. A message without a report within the timeout is
        unconfirmed; it may still arrive, which ``x-replay-id`` lets consumers detect."""
        if not messages:
            return []
        producer = self._producer_client()
        self._topic_partitions(producer, target.name)
        reports: list[PublishResult | None] = [None] * len(messages)
        deadline = time.monotonic() + self.timeout
        for index, message in enumerate(messages):
            reports[index] = self._produce(producer, target.name, index, message, reports, deadline)
        if producer.flush(self.timeout):
            # Whatever never left the local queue is certainly not published: say so now rather
            # than let it go out after the caller has recorded a failure.
            producer.purge(in_queue=True, in_flight=False)
            producer.poll(0)
        if self._producer_failed:
            self._producer = None  # the next publish starts a fresh producer
        late = f"no delivery report within {self.timeout:g} s"
        return [report or PublishResult(index=i, confirmed=False, error=late) for i, report in enumerate(reports)]

    def _produce(
        self,
        producer: Any,
        topic: str,
        index: int,
        message: OutgoingMessage,
        reports: list[PublishResult | None],
        deadline: float,
    ) -> PublishResult | None:
        """Queue one message; returns a failed result when it could not be queued, else None (the
        delivery callback fills the result later). A full local queue is drained, not dropped."""

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is None:
                reports[index] = PublishResult(
                    index=index, confirmed=True, broker_message_id=f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
                )
            elif err.code() == KafkaError._PURGE_QUEUE:
                reports[index] = PublishResult(index=index, confirmed=False, error="never sent: the flush timed out")
            else:
                reports[index] = PublishResult(index=index, confirmed=False, error=err.str())

        try:
            key = _raw(message.properties.get("key"))
            headers = _header_pairs(message.headers)
        except (TypeError, ValueError) as exc:
            return PublishResult(index=index, confirmed=False, error=f"cannot encode key or headers: {exc}")
        while True:
            try:
                producer.produce(topic, value=message.body, key=key, headers=headers, on_delivery=delivered)
                return None
            except BufferError:
                if time.monotonic() > deadline:
                    return PublishResult(index=index, confirmed=False, error="local producer queue stayed full")
                producer.poll(0.05)
            except KafkaException as exc:
                return PublishResult(index=index, confirmed=False, error=exc.args[0].str())

    # -- discovery and lifecycle ---------------------------------------------------------------

    def list_candidates(self) -> list[Candidate]:
        """Topics named like dead-letter topics, each with the topic it was named after when that
        exists (Spring: ``orders.DLT`` is fed by ``orders``). Depth is left to ``depth``: it needs
        a consumer group, which the operator chooses (the suggestion is ``dlq-console.<topic>``)."""
        admin = self._admin_client()
        try:
            names = set(admin.list_topics(timeout=self.timeout).topics)
        except KafkaException as exc:
            raise _broker_error(f"cannot list topics on {self.broker.endpoint}", exc.args[0]) from None
        candidates = []
        unnamed = []
        for name in sorted(names):
            if name.startswith("__"):
                continue
            source = _dlq_source(name)
            if source is None:
                unnamed.append(name)
                continue
            candidates.append(
                Candidate(
                    address=DlqAddress(name=name, group=f"dlq-console.{name}"),
                    sources=(source,) if source in names else (),
                    hint="Kafka topic named like a dead-letter topic",
                )
            )
        # Kafka Streams and share groups write to a topic of any name: look at the records.
        for name, source in self._dead_letter_topics_by_headers(unnamed).items():
            candidates.append(
                Candidate(
                    address=DlqAddress(name=name, group=f"dlq-console.{name}"),
                    sources=(source,) if source in names else (),
                    hint="Kafka topic holding Kafka Streams or share-group dead letters (by their headers)",
                )
            )
        return sorted(candidates, key=lambda c: c.address.name)

    # -- issue 15: who reads a replay target, dead-letter topics found by their headers -------

    def consumer_groups_reading(self, topic: str, *, limit: int = 200) -> list[str]:
        """Consumer groups with a committed offset on ``topic``: every one of them receives a record
        replayed to it (the dry run names them). At most ``limit`` groups are asked, sorted."""
        admin = self._admin_client()
        try:
            listed = admin.list_consumer_groups(request_timeout=self.timeout).result(timeout=self.timeout)
            groups = sorted({g.group_id for g in listed.valid})[:limit]
            # One group per request (librdkafka's limit): send them all, then wait for each.
            pending = {
                group: admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
                )[group]
                for group in groups
            }
            readers = []
            for group, future in pending.items():
                committed = future.result(timeout=self.timeout).topic_partitions or []
                if any(tp.topic == topic and tp.offset >= 0 for tp in committed):
                    readers.append(group)
        except KafkaException as exc:
            raise _broker_error(f"cannot list the consumer groups of {topic}", exc.args[0]) from None
        return readers

    def _dead_letter_topics_by_headers(self, names: list[str]) -> dict[str, str]:
        """Topics whose first record carries the headers of a dead-letter writer that may use any
        topic name: Kafka Streams (``__streams.errors.*``) and share groups (``__dlq.errors.*``).
        Returns {topic: the source topic its first record names}. Reads partition 0 of at most 200
        non-empty topics, for at most the adapter's timeout, in a child process: librdkafka
        crashes the process when one of them is deleted meanwhile (recovery.brokers.kafka_probe)."""
        names = self._non_empty(names[:200])
        return kafka_probe.dead_letter_topics(self.client_config(), names, self.timeout)

    def _non_empty(self, names: list[str]) -> list[str]:
        """Those topics whose partition 0 holds a record (high watermark above the low one)."""
        if not names:
            return []
        admin = self._admin_client()
        tps = [TopicPartition(name, 0) for name in names]
        try:
            lows = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps}, request_timeout=self.timeout)
            highs = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=self.timeout)
        except KafkaException as exc:
            raise _broker_error(f"cannot read the offsets of topics on {self.broker.endpoint}", exc.args[0]) from None
        found = []
        for tp in tps:
            with contextlib.suppress(KafkaException):  # a topic deleted meanwhile is not a candidate
                if highs[tp].result().offset > lows[tp].result().offset:
                    found.append(tp.topic)
        return found

    def close(self) -> None:
        """Leave every group without committing (what was not removed is read again by the next
        reader, invariant 1) and flush the producer. Safe to call more than once."""
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            # Already closed, or the broker is gone: the group then times the member out.
            with contextlib.suppress(KafkaException, RuntimeError):
                reader.consumer.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(self.timeout)
        self._admin = None

    # -- clients -------------------------------------------------------------------------------

    def _reader(self, address: DlqAddress) -> _Reader:
        key = (address.name, _require_group(address))
        reader = self._readers.get(key)
        if reader is not None:
            return reader
        consumer = Consumer(
            {
                **self.client_config(),
                "group.id": address.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )
        reader = _Reader(consumer=consumer)
        try:
            partitions = self._topic_partitions(consumer, address.name)
            # No offset given: each partition starts at the group's committed offset, or at the
            # earliest one when the group has none (auto.offset.reset).
            consumer.assign([TopicPartition(address.name, p) for p in partitions])
        except (BrokerError, KafkaException) as exc:
            consumer.close()
            if isinstance(exc, BrokerError):
                raise
            raise _broker_error(f"cannot read {address.name}", exc.args[0]) from None
        self._readers[key] = reader
        return reader

    def _check_alarm(self, reader: _Reader, address: DlqAddress) -> None:
        """An empty read after an alarm: ask the broker directly, so that a DLQ that is merely
        empty is not reported as an outage, nor an outage as an empty DLQ."""
        self._topic_partitions(reader.consumer, address.name)  # raises while the broker is away
        self._alarm = None

    def _existing_reader(self, address: DlqAddress, messages: list[ReceivedMessage]) -> _Reader:
        reader = self._readers.get((address.name, address.group))
        if reader is None:
            raise BrokerError(
                f"{address.name} was not read by group {address.group} through this adapter: nothing to commit",
                permanent=True,
            )
        if any(m.receipt[0] != address.name for m in messages):
            raise BrokerError(f"messages from another topic cannot be removed from {address.name}", permanent=True)
        return reader

    def _give_back(self, reader: _Reader, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Seek back to the lowest offset per partition; the seek drops what was fetched after it."""
        lowest: dict[int, int] = {}
        for message in messages:
            _topic, partition, offset = message.receipt
            lowest[partition] = min(offset, lowest.get(partition, offset))
        for partition, offset in lowest.items():
            try:
                reader.consumer.seek(TopicPartition(address.name, partition, offset))
            except KafkaException:
                continue  # not assigned any more: its next owner starts from the committed offset
            left = reader.outstanding.get(partition, set())
            reader.outstanding[partition] = {o for o in left if o < offset}

    def _producer_client(self) -> Any:
        if self._producer is None:
            self._producer_failed = False
            self._producer = Producer(
                {
                    "message.max.bytes": _PRODUCER_MAX_MESSAGE_BYTES,
                    **self.client_config(),
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    # Give up on a message when publish stops waiting for it, so a failure reported
                    # to the caller is not followed by a late delivery.
                    "message.timeout.ms": max(1000, int(self.timeout * 1000)),
                }
            )
        return self._producer

    def retention_seconds(self, address: DlqAddress) -> int | None:
        """The topic's ``retention.ms`` (None when unlimited, -1)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, address.name)
        try:
            configs = self._admin_client().describe_configs([resource])[resource].result(timeout=self.timeout)
        except KafkaException as exc:
            raise _broker_error(f"cannot read the configuration of {address.name}", exc.args[0]) from None
        except TimeoutError:
            raise BrokerError(
                f"cannot read the configuration of {address.name}: no answer in {self.timeout:g} s"
            ) from None
        entry = configs.get("retention.ms")
        value = int(entry.value) if entry is not None and entry.value not in (None, "") else -1
        return value // 1000 if value >= 0 else None

    def ensure_dead_letter_pair(self, work: str, dlq: str) -> tuple[str, str, list[str]]:
        """Create the topics ``work`` and ``dlq`` (one partition each) unless they exist: (work,
        dlq, names created now). Kafka never dead-letters by itself: the drill's consumer
        publishes its failures to ``dlq`` as Spring Kafka's recoverer does. Used by recovery drills."""
        admin = self._admin_client()
        try:
            existing = set(admin.list_topics(timeout=self.timeout).topics)
        except KafkaException as exc:
            raise _broker_error(f"cannot reach {self.broker.endpoint}", exc.args[0]) from None
        missing = [name for name in (work, dlq) if name not in existing]
        if missing:
            futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1) for name in missing])
            for name, future in futures.items():
                try:
                    future.result(timeout=self.timeout)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise _broker_error(f"cannot create topic {name}", exc.args[0]) from None
        return work, dlq, missing

    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = AdminClient(self.client_config())
        return self._admin

    def _topic_partitions(self, client: Any, topic: str) -> list[int]:
        """The topic's partitions; a missing topic is a permanent error (never auto-created)."""
        try:
            metadata = client.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise _broker_error(f"cannot reach {self.broker.endpoint}", exc.args[0]) from None
        found = metadata.topics.get(topic)
        if found is None or (found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise BrokerError(f"topic {topic} does not exist on {self.broker.endpoint}", permanent=True)
        if found.error is not None:
            raise _broker_error(f"topic {topic}", found.error)
        return sorted(found.partitions)


def _bootstrap_addresses(endpoint: str) -> list[tuple[str, int]]:
    """host:port pairs of a bootstrap list ("a:9092,PLAINTEXT://b:9092,[::1]:9092"); an entry
    without a port is left out (librdkafka decides what it means)."""
    addresses = []
    for entry in endpoint.split(","):
        host, _, port = entry.strip().rpartition("://")[2].rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses


def _refuse_when_every_server_refuses(endpoint: str, timeout: float) -> None:
    """Raises a (transient) BrokerError when every bootstrap server actively refuses a TCP
    connection. librdkafka would retry a refused connection until the call's timeout, so a ping,
    a capture pass or a precondition check of a broker that is down would take the whole timeout
    to say so; a refusal is a definite answer. Anything else (a timeout, a name that does not
    resolve, one server answering) is left to librdkafka, which reports it as it always has."""
    addresses = _bootstrap_addresses(endpoint)
    if not addresses:
        return
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=min(timeout, 3.0)):
                return
        except ConnectionRefusedError:
            continue
        except OSError:
            return
    raise BrokerError(f"cannot reach {endpoint}: connection refused by every bootstrap server")


def _broker_error(context: str, error: KafkaError) -> BrokerError:
    """The broker's own message (librdkafka never includes the SASL password in it)."""
    permanent = error.code() in _PERMANENT_CODES or error.fatal()
    return BrokerError(f"{context}: {error.str()}", permanent=permanent)


def _require_group(address: DlqAddress) -> str:
    if not address.group:
        raise BrokerError(f"the Kafka DLQ {address.name} needs a consumer group", permanent=True)
    return address.group


def _received(msg: Any) -> ReceivedMessage:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    ts_type, ts = msg.timestamp()
    try:
        headers = _header_dict(msg.headers() or [])
    except (UnicodeDecodeError, ValueError) as exc:  # a header name that is not UTF-8 (invariant 10)
        headers = {"$undecodable": str(exc)}
    return ReceivedMessage(
        identity=f"{topic}/{partition}/{offset}",
        body=msg.value() or b"",
        headers=headers,
        properties={
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp": ts if ts_type in _TIMESTAMP_TYPES else None,
            "timestamp_type": _TIMESTAMP_TYPES.get(ts_type, "not_available"),
            "key": json_safe(msg.key()),
        },
        receipt=(topic, partition, offset),
    )


def _header_dict(pairs: list[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Kafka headers are an ordered list in which a name may repeat. A name seen once maps to its
    JSON-safe value; a repeated name maps to the list of its values in order. A value is never a
    list otherwise, so the shape is unambiguous and ``_header_pairs`` inverts it."""
    headers: dict[str, Any] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        safe = json_safe(value)
        if name in repeated:
            headers[name].append(safe)
        elif name in headers:
            headers[name] = [headers[name], safe]
            repeated.add(name)
        else:
            headers[name] = safe
    return headers


def _header_pairs(headers: dict[str, Any]) -> list[tuple[str, bytes | None]]:
    """The inverse of ``_header_dict``: a list value becomes the header repeated, in order."""
    pairs: list[tuple[str, bytes | None]] = []
    for name, value in headers.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((str(name), _raw(item)))
    return pairs


def _raw(value: Any) -> bytes | None:
    """Bytes for a key or header value: text as UTF-8, ``{"$base64": ...}`` (json_safe's form of
    bytes that are not text) decoded back to the original bytes, None kept as no value."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"], validate=True)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{type(value).__name__} is not text, bytes or {{'$base64': ...}}")


def _dlq_source(name: str) -> str | None:
    """For a topic named like a DLQ, the name of the topic it was derived from ('' when it says
    dead-letter without a removable marker); None when the name does not look like a DLQ."""
    lower = name.lower()
    for suffix in _DLQ_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    for prefix in _DLQ_PREFIXES:
        if lower.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return "" if "dead-letter" in lower else None
