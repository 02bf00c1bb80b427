"""The adapter Protocol every broker implementation satisfies, and the plain data it speaks.

Everything outside recovery/brokers/<kind>.py uses these types and never imports a client
library (boto3, pika, confluent_kafka). All header and property values handed out are
JSON-safe (see ``json_safe``), so they can be stored and shown without the client library.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from recovery.errors import BrokerError

if TYPE_CHECKING:
    from recovery.models import Broker

__all__ = [
    "BrokerAdapter",
    "BrokerError",
    "Candidate",
    "DlqAddress",
    "OutgoingMessage",
    "Ping",
    "PublishResult",
    "ReceivedMessage",
    "Target",
    "json_safe",
]


@dataclass(frozen=True)
class Ping:
    """A successful round trip to the broker: how long it took and what the broker said."""

    latency_ms: float
    detail: str


@dataclass(frozen=True)
class DlqAddress:
    """Where a dead-letter queue lives on its broker.

    - SQS: ``name`` is the queue URL.
    - RabbitMQ: ``name`` is the queue name, ``vhost`` its virtual host ('' = the URL's).
    - Kafka: ``name`` is the topic, ``group`` the consumer group the console reads it with.
    """

    name: str
    vhost: str = ""  # '' = the broker URL's vhost
    group: str = ""


@dataclass(frozen=True)
class Target:
    """Where a replayed message goes.

    - SQS: ``name`` is the queue URL (FIFO when it ends in .fifo).
    - RabbitMQ: ``name`` is the exchange ('' = default exchange), ``routing_key`` the key
      (the queue name for the default exchange), ``vhost`` the virtual host.
    - Kafka: ``name`` is the topic; ``routing_key`` unused (the message key is a property).
    """

    name: str
    routing_key: str = ""
    vhost: str = ""  # '' = the broker URL's vhost


@dataclass(frozen=True)
class ReceivedMessage:
    """One message read from a DLQ and not yet removed from it.

    ``identity`` is stable across redeliveries of the same broker message (invariant 1):
    SQS MessageId; Kafka ``topic/partition/offset``; AMQP ``message_id`` property or '' when the
    publisher set none (capture then derives one from the content). ``receipt`` is the opaque
    handle ``remove``/``release`` need (SQS receipt handle, AMQP delivery tag, Kafka position).
    """

    identity: str
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    receipt: Any = field(repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish. ``headers`` become AMQP headers / SQS message attributes (String) /
    Kafka headers. ``properties`` carries broker properties: AMQP ``content_type``,
    ``message_id``, ``correlation_id``, ``type``, ``app_id``, ``timestamp``; SQS
    ``message_group_id`` and ``deduplication_id``; Kafka ``key`` (str or bytes)."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishResult:
    """The broker's answer for one message of a batch, in the batch's order. ``confirmed`` is
    True only on a positive broker confirmation (invariant 2)."""

    index: int
    confirmed: bool
    error: str = ""
    broker_message_id: str = ""


@dataclass(frozen=True)
class Candidate:
    """A queue/topic that looks like a DLQ, and what feeds it."""

    address: DlqAddress
    sources: tuple[str, ...] = ()
    depth: int | None = None
    hint: str = ""


class BrokerAdapter(Protocol):
    broker: Broker

    def __init__(self, broker: Broker, *, timeout: float) -> None: ...

    def ping(self) -> Ping:
        """One cheap authenticated round trip. Raises BrokerError with the broker's message."""
        ...

    def depth(self, address: DlqAddress) -> int:
        """Messages waiting: queue depth (SQS/RabbitMQ) or the consumer group's lag (Kafka)."""
        ...

    def retention_seconds(self, address: DlqAddress) -> int | None:
        """How long the broker keeps a message in this queue/topic (SQS MessageRetentionPeriod,
        RabbitMQ x-message-ttl or policy message-ttl, Kafka retention.ms); None: unlimited/unknown."""
        ...

    def receive(self, address: DlqAddress, *, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages, waiting at most ``wait_seconds`` for the first.
        They stay on the broker (invisible/unacked/uncommitted) until ``remove``."""
        ...

    def remove(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Delete (SQS), ack (RabbitMQ) or commit past (Kafka) these received messages. Called
        only after their rows are committed (invariant 1)."""
        ...

    def release(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Give received messages back without removing them (visibility 0 / requeue / no-op)."""
        ...

    def prepare_publish(self, target: Target) -> None:
        """Open what publishing to ``target`` needs (connection, channel, producer), so the first
        ``publish`` does not pay for it after the replay engine took its tokens. Raises BrokerError
        like ``publish`` would."""
        ...

    def publish(self, target: Target, messages: list[OutgoingMessage]) -> list[PublishResult]:
        """Publish with a broker confirmation per message (invariant 2); never raises for a
        single message's failure, only for the whole batch (BrokerError)."""
        ...

    def list_candidates(self) -> list[Candidate]:
        """Queues/topics that look like DLQs, with the sources that feed them where known."""
        ...

    def close(self) -> None:
        """Release connections; messages received and not removed go back to the broker."""
        ...


def json_safe(value: Any) -> Any:
    """Headers and properties as JSON: text stays text; bytes become text when valid UTF-8,
    else ``{"$base64": "..."}``; datetimes become ISO strings; nested tables and lists recurse.
    Never raises for hostile input (invariant 10)."""
    if value is None or isinstance(value, bool | int | str):
        return value.replace("\x00", "\ufffd") if isinstance(value, str) else value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"$base64": base64.b64encode(raw).decode("ascii")}
        return text if "\x00" not in text else {"$base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)
