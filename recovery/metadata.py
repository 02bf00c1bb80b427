"""Failure metadata normalisation: one ``Failure`` from whatever a broker or a framework left on
a dead letter (DESIGN "failure"). Pure functions: no models, no I/O, no broker client.

Inputs are the JSON-safe headers and properties the adapters hand out
(``recovery.brokers.base.json_safe``). ``normalise`` never raises and bounds every field
(invariant 10, "bad input is data"): hostile values become empty fields, never errors.

Sources, highest precedence first; each field comes from the first source that has it:

================  ===========================================================================
header_mapping    the DLQ's own ``{field: header name}``; overrides everything
Spring Kafka      kafka_dlt-original-*, kafka_dlt-exception-* (-cause-fqcn, key-exception-*),
                  the non-DLT kafka_original-* / kafka_exception-*, retry_topic-attempts
Kafka Connect     __connect.errors.*
Kafka Streams     __streams.errors.* (Kafka 4.x Streams dead-letter queue, KIP-1034)
share groups      __dlq.errors.* (written by the broker for a share group, KIP-1191)
MassTransit       MT-Fault-*, MT-Reason
NServiceBus       NServiceBus.ExceptionInfo.*, NServiceBus.FailedQ, NServiceBus.TimeOfFailure
Celery            protocol 2 task headers, as AMQP headers or in a kombu JSON envelope body
application       x-exception-{class,type,fqcn,message,stacktrace} (Spring AMQP, Spring Cloud
                  Stream), x-original-{exchange,routingKey,topic,partition,offset}
broker            RabbitMQ x-death / x-first-death-* (on any broker), then per kind: AMQP
                  properties; SQS system attributes and redrive sources; the Kafka record
================  ===========================================================================

``reason`` is the exception: the broker's reason (x-death, SQS redrive) comes first, because it
says why the message left its queue. When a framework replaces the broker's origin or attempt
count, the broker's value stays in extras as ``broker_origin`` / ``broker_attempt_count``.

Where a replay should go is recorded separately, in ``extras["replay_origin"]`` (a place on the
letter's own broker: "rabbitmq:...", "sqs:...", "kafka:<topic>" or "queue:<name>") with
``extras["replay_origin_source"]`` saying who recorded it (invariant 14), best first:

- ``broker``: the broker's own dead-lettering record: RabbitMQ x-death / x-first-death-*, SQS
  DeadLetterQueueSourceArn or the DLQ's single redrive source, a Kafka share group's __dlq.errors.*;
- ``framework``: the dead-letter writer of a Kafka framework: Spring Kafka's kafka_dlt-original-*,
  Kafka Connect's __connect.errors.*, Kafka Streams' __streams.errors.*;
- ``headers``: headers the producer or an application framework set: x-original-exchange /
  -routingKey / -topic, MassTransit's MT-Fault-InputAddress, NServiceBus.FailedQ. Used only when
  nothing above names a place; the dry run marks such targets "from message headers".

Celery task headers name a task, never a place: a Celery letter dead-lettered by RabbitMQ goes
back to the queue x-death names.

Kafka origins name the topic only ("kafka:orders"): the partition and offset identify one
message, so they go to ``source_message_id`` ("orders[0]@42"); in the origin they would give
every message its own fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Failure", "normalise"]

logger = logging.getLogger(__name__)

MAX_ORIGIN = 500
MAX_REASON = 200
MAX_ERROR_CLASS = 300
MAX_ERROR_MESSAGE = 4000
MAX_STACK_TRACE = 50_000
MAX_SOURCE_MESSAGE_ID = 300  # DeadLetter.source_message_id
MAX_ATTEMPTS = 10**9
MAX_ENVELOPE_BODY = 1 << 20  # bodies above this are never parsed for a kombu envelope
MAX_EXTRA_TEXT = 2000
MAX_NAME = 255  # queue, topic, task and class names inside composed values
_MAX_DEATHS = 50  # RabbitMQ keeps one x-death entry per (queue, reason): more is hostile
_MAX_BASE64 = 280_000  # base64 characters decoded at most (~210 KB, above every field limit)
_MAX_INT = 2**63 - 1

_INT = re.compile(r"[+-]?\d{1,30}")
_DECIMAL = re.compile(r"[+-]?\d{1,30}\.\d{0,30}")
# NServiceBus wire format: "2014-11-11 02:26:58:000462 Z"
_NSERVICEBUS_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}):(\d{1,6}) Z")


@dataclass(frozen=True)
class Failure:
    """Why and where a dead letter failed, in one shape for every broker and framework.

    Text fields are truncated to their limits and free of NUL characters; dates are aware UTC;
    ``attempt_count`` is within 0..10**9; ``extras`` is JSON-safe (details that have no field of
    their own: Celery task id and retries, Kafka original partition/offset, connector name, ...).
    """

    origin: str = ""
    reason: str = ""
    error_class: str = ""
    error_message: str = ""
    stack_trace: str = ""
    attempt_count: int | None = None
    first_failed_at: datetime | None = None
    last_failed_at: datetime | None = None
    source_message_id: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


_TEXT_LIMITS = {
    "origin": MAX_ORIGIN,
    "reason": MAX_REASON,
    "error_class": MAX_ERROR_CLASS,
    "error_message": MAX_ERROR_MESSAGE,
    "stack_trace": MAX_STACK_TRACE,
    "source_message_id": MAX_SOURCE_MESSAGE_ID,
}
_FIELDS = (*_TEXT_LIMITS, "attempt_count", "first_failed_at", "last_failed_at")
_FIELD_SET = frozenset(_FIELDS)

# ---------------------------------------------------------------------------------------------
# Reading one value. Every reader accepts anything and returns a bounded value or None/"".
# ---------------------------------------------------------------------------------------------


def _scalar(value: Any) -> Any:
    """Unwrap the containers adapters produce: a repeated Kafka key (a list: the last value
    wins, as Kafka's lastHeader), an SQS attribute ({"DataType", "StringValue"|"BinaryValue"})
    and non-UTF-8 bytes ({"$base64": ...}, decoded to bytes; invalid base64 gives None)."""
    for _ in range(3):
        if isinstance(value, list | tuple):
            value = value[-1] if value else None
        elif isinstance(value, dict) and "DataType" in value:
            value = value.get("StringValue", value.get("BinaryValue"))
        elif isinstance(value, dict) and "$base64" in value:
            encoded = value["$base64"]
            if not isinstance(encoded, str):
                return None
            try:
                return base64.b64decode(encoded[:_MAX_BASE64], validate=True)
            except (binascii.Error, ValueError):
                return None
        else:
            break
    return None if isinstance(value, dict | list | tuple) else value


def _clean(text: str, limit: int) -> str:
    """Bounded, NUL-free, encodable text (PostgreSQL refuses NUL and lone surrogates)."""
    text = text[: limit * 2]  # bound the work on enormous input first
    if "\x00" in text:
        text = text.replace("\x00", "")
    text = text.strip()[:limit]
    if text.isascii():  # nothing to check: ASCII always encodes
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _text(value: Any, limit: int) -> str:
    if value is None:  # the usual case: a header that is not there
        return ""
    if value.__class__ is str:  # the next most usual one; _scalar keeps text as it is
        return _clean(value, limit) if value else ""
    value = _scalar(value)
    if isinstance(value, str):
        return _clean(value, limit)
    if isinstance(value, bytes | bytearray):
        return _clean(bytes(value[: limit * 4]).decode("utf-8", "replace"), limit)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) <= _MAX_INT:
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return _clean(repr(value), limit)
    return ""


def _int(value: Any) -> int | None:
    """An integer from an int, a finite float or decimal text; None for anything else."""
    value = _scalar(value)
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:40]).decode("ascii", "replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        text = value.strip()[:64]
        if _INT.fullmatch(text):
            value = int(text)
        elif _DECIMAL.fullmatch(text):
            value = int(float(text))
        else:
            return None
    if isinstance(value, int) and abs(value) <= _MAX_INT:
        return value
    return None


def _java_int(value: Any, widths: Sequence[int]) -> int | None:
    """A Java int/long header: Spring writes it big-endian (4 bytes for an int, 8 for a long,
    1..8 for an old BigInteger), which json_safe hands over as {"$base64": ...} or, when the
    bytes hold no NUL and happen to be UTF-8, as control characters; other producers write
    decimal text. Accept all of these."""
    raw = _scalar(value)
    if isinstance(raw, str) and any(ord(c) < 0x20 for c in raw[:9]):
        raw = raw.encode("utf-8", "replace")
    if isinstance(raw, bytes | bytearray) and not bytes(raw).isdigit():
        return int.from_bytes(raw, "big", signed=True) if len(raw) in widths else None
    return _int(raw)


def _attempts(value: Any) -> int | None:
    count = _int(value)
    return None if count is None else max(0, min(count, MAX_ATTEMPTS))


def _epoch(number: float) -> datetime | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude
    (1e11 seconds is the year 5138; 1e11 milliseconds is 1973)."""
    if not math.isfinite(number) or number <= 0:
        return None
    for scale in (1, 1e3, 1e6, 1e9):
        if number < 1e11 * scale:
            try:
                return datetime.fromtimestamp(number / scale, UTC)
            except (OverflowError, OSError, ValueError):
                return None
    return None


def _when(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (naive means UTC), NServiceBus's wire format,
    or an epoch number (as a number or as text); None when malformed."""
    value = _scalar(value)
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:64]).decode("utf-8", "replace")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _epoch(float(value)) if abs(value) < 1e30 else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if _INT.fullmatch(text) or _DECIMAL.fullmatch(text):
        return _epoch(float(text))
    if match := _NSERVICEBUS_TIME.fullmatch(text):
        date, clock, fraction = match.groups()
        text = f"{date}T{clock}.{fraction.ljust(6, '0')}+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _extra(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy of an extras value."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _MAX_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clean(value, MAX_EXTRA_TEXT)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple) and depth < 3:
        return [_extra(v, depth + 1) for v in value[:20]]
    if isinstance(value, dict) and depth < 3:
        return {_clean(str(k), MAX_NAME): _extra(v, depth + 1) for k, v in list(value.items())[:20]}
    return None


class _Headers:
    """Header lookup by exact name, then case-insensitively (transports and proxies differ)."""

    def __init__(self, raw: Any) -> None:
        self.raw: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        self._folded: dict[str, Any] | None = None

    def get(self, name: str) -> Any:
        if name in self.raw:
            return self.raw[name]
        if self._folded is None:
            self._folded = {k.lower(): v for k, v in self.raw.items() if isinstance(k, str)}
        return self._folded.get(name.lower())

    def first(self, *names: str) -> Any:
        for name in names:
            value = self.get(name)
            if value is not None:
                return value
        return None


class _Input:
    """What the detectors read (a plain slotted class: one is built per captured message)."""

    __slots__ = ("body", "dlq_sources", "headers", "kind", "properties")

    def __init__(
        self, kind: str, headers: _Headers, properties: dict[Any, Any], body: Any, dlq_sources: tuple[Any, ...]
    ) -> None:
        self.kind = kind
        self.headers = headers
        self.properties = properties
        self.body = body
        self.dlq_sources = dlq_sources


_Found = dict[str, Any]  # some of _FIELDS, plus "extras"


def _kafka_position(topic: str, partition: int | None, offset: int | None) -> _Found:
    """Origin and source message id of a record that failed at topic[partition]@offset."""
    found: _Found = {"origin": f"kafka:{topic}" if topic else ""}
    if topic and partition is not None and offset is not None:
        found["source_message_id"] = f"{topic}[{partition}]@{offset}"
    found["extras"] = {"original_topic": topic, "original_partition": partition, "original_offset": offset}
    return found


def _amqp_origin(exchange: str | None, routing_keys: list[str], queue: str) -> str:
    parts = [] if exchange is None else [f"exchange={exchange or '(default)'}"]
    if routing_keys:
        parts.append("routing_key=" + ",".join(routing_keys))
    if queue:
        parts.append(f"queue={queue}")
    return "rabbitmq:" + " ".join(parts) if parts else ""


def _exception(found: _Found, error_class: str, message: str, stack: str, reason: str = "exception") -> _Found:
    found.update(error_class=error_class, error_message=message, stack_trace=stack)
    if (error_class or message or stack) and not found.get("reason"):
        found["reason"] = reason
    return found


# ---------------------------------------------------------------------------------------------
# Detectors: one per source, each returns what it found (possibly nothing).
# ---------------------------------------------------------------------------------------------


def _spring_kafka(inp: _Input) -> _Found:
    h = inp.headers
    found: _Found = {}
    for prefix in ("kafka_dlt-", "kafka_"):
        topic = _text(h.get(prefix + "original-topic"), MAX_NAME)
        if topic:
            partition = _java_int(h.get(prefix + "original-partition"), (4,))
            found = _kafka_position(topic, partition, _java_int(h.get(prefix + "original-offset"), (8,)))
            stamp = _java_int(h.get(prefix + "original-timestamp"), (8,))
            found["extras"].update(
                original_timestamp=_epoch(stamp) if stamp is not None else None,
                original_timestamp_type=_text(h.get(prefix + "original-timestamp-type"), MAX_NAME),
                consumer_group=_text(h.get(prefix + "original-consumer-group"), MAX_NAME),
            )
            break
    for name in ("kafka_dlt-exception-", "kafka_dlt-key-exception-", "kafka_exception-", "kafka_key-exception-"):
        error_class = _text(h.get(name + "fqcn"), MAX_ERROR_CLASS)
        message = _text(h.get(name + "message"), MAX_ERROR_MESSAGE)
        if error_class or message:
            _exception(found, error_class, message, _text(h.get(name + "stacktrace"), MAX_STACK_TRACE))
            cause = _text(h.get(name + "cause-fqcn"), MAX_ERROR_CLASS)
            found.setdefault("extras", {}).update(
                exception_cause_class=cause, key_error=True if "key-" in name else None
            )
            break
    found["attempt_count"] = _attempts(_java_int(h.get("retry_topic-attempts"), range(1, 9)))
    return found


def _kafka_connect(inp: _Input) -> _Found:
    h = inp.headers
    prefix = "__connect.errors."
    topic = _text(h.get(prefix + "topic"), MAX_NAME)
    if not topic and h.get(prefix + "exception.class.name") is None:
        return {}
    found = _kafka_position(topic, _int(h.get(prefix + "partition")), _int(h.get(prefix + "offset")))
    connector = _text(h.get(prefix + "connector.name"), MAX_NAME)
    found["extras"].update(
        # a sink connector reads with the group "connect-<name>" unless its config overrides it
        consumer_group=f"connect-{connector}" if connector else "",
        connector=connector,
        connect_task_id=_int(h.get(prefix + "task.id")),
        connect_stage=_text(h.get(prefix + "stage"), MAX_NAME),
        connect_class=_text(h.get(prefix + "class.name"), MAX_NAME),
    )
    return _exception(
        found,
        _text(h.get(prefix + "exception.class.name"), MAX_ERROR_CLASS),
        _text(h.get(prefix + "exception.message"), MAX_ERROR_MESSAGE),
        _text(h.get(prefix + "exception.stacktrace"), MAX_STACK_TRACE),
    )


def _kafka_streams(inp: _Input) -> _Found:
    """Kafka Streams' dead-letter queue (Kafka 4.x, ``errors.dead.letter.queue.topic.name``): the
    source record's topic, partition and offset, and the exception, as UTF-8 text."""
    h = inp.headers
    prefix = "__streams.errors."
    topic = _text(h.get(prefix + "topic"), MAX_NAME)
    if not topic and h.get(prefix + "exception") is None:
        return {}
    found = _kafka_position(topic, _int(h.get(prefix + "partition")), _int(h.get(prefix + "offset")))
    found["extras"]["kafka_streams"] = True
    return _exception(
        found,
        _text(h.get(prefix + "exception"), MAX_ERROR_CLASS),
        _text(h.get(prefix + "message"), MAX_ERROR_MESSAGE),
        _text(h.get(prefix + "stacktrace"), MAX_STACK_TRACE),
    )


def _share_group(inp: _Input) -> _Found:
    """A share group's dead-letter queue (KIP-1191): the broker copies a record a member rejected,
    or one past the group's delivery limit, with the source position, the group and the count."""
    h = inp.headers
    prefix = "__dlq.errors."
    topic = _text(h.get(prefix + "topic"), MAX_NAME)
    group = _text(h.get(prefix + "group"), MAX_NAME)
    if not topic and not group:
        return {}
    found = _kafka_position(topic, _int(h.get(prefix + "partition")), _int(h.get(prefix + "offset")))
    found["extras"].update(consumer_group=group, share_group=group)
    found["attempt_count"] = _attempts(h.get(prefix + "delivery.count"))
    found["reason"] = _text(h.get(prefix + "message"), MAX_REASON) or "share group dead letter"
    return found


def _masstransit(inp: _Input) -> _Found:
    h = inp.headers
    address = _text(h.get("MT-Fault-InputAddress"), MAX_ORIGIN)
    retries = _int(h.get("MT-Fault-RetryCount"))
    found: _Found = {
        "origin": f"masstransit:{address}" if address else "",
        "reason": _text(h.get("MT-Reason"), MAX_REASON),
        "last_failed_at": _when(h.get("MT-Fault-Timestamp")),
        "attempt_count": _attempts(retries + 1) if retries is not None else None,
        "extras": {
            "consumer_type": _text(h.get("MT-Fault-ConsumerType"), MAX_NAME),
            "message_type": _text(h.get("MT-Fault-MessageType"), MAX_NAME),
            "redelivery_count": _int(h.get("MT-Fault-RedeliveryCount")),
        },
    }
    return _exception(
        found,
        _text(h.get("MT-Fault-ExceptionType"), MAX_ERROR_CLASS),
        _text(h.get("MT-Fault-Message"), MAX_ERROR_MESSAGE),
        _text(h.get("MT-Fault-StackTrace"), MAX_STACK_TRACE),
        reason="fault",
    )


def _nservicebus(inp: _Input) -> _Found:
    h = inp.headers
    prefix = "NServiceBus.ExceptionInfo."
    queue = _text(h.get("NServiceBus.FailedQ"), MAX_ORIGIN)
    found: _Found = {
        "origin": f"nservicebus:{queue}" if queue else "",
        "last_failed_at": _when(h.get("NServiceBus.TimeOfFailure")),
        "extras": {
            "processing_endpoint": _text(h.get("NServiceBus.ProcessingEndpoint"), MAX_NAME),
            "delayed_retries": _int(h.get("NServiceBus.Retries")),
            "nservicebus_message_id": _text(h.get("NServiceBus.MessageId"), MAX_NAME),
        },
    }
    return _exception(
        found,
        _text(h.get(prefix + "ExceptionType"), MAX_ERROR_CLASS),
        _text(h.get(prefix + "Message"), MAX_ERROR_MESSAGE),
        _text(h.get(prefix + "StackTrace"), MAX_STACK_TRACE),
    )


def _kombu_envelope_headers(body: Any) -> _Headers | None:
    """The task headers inside a kombu JSON envelope ({"body", "content-encoding",
    "content-type", "headers", "properties"}), as Celery's SQS and Kafka transports write it;
    kombu's SQS transport base64-encodes the whole envelope by default. Bodies above
    MAX_ENVELOPE_BODY are not parsed."""
    if not isinstance(body, bytes | bytearray | memoryview) or not 2 <= len(body) <= MAX_ENVELOPE_BODY:
        return None
    data = bytes(body).strip()
    if data.startswith(b"eyJ"):  # base64 of '{"'
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
    if not data.startswith(b"{") or b'"headers"' not in data:
        return None
    try:
        envelope = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if isinstance(envelope, dict) and "body" in envelope and isinstance(envelope.get("headers"), dict):
        return _Headers(envelope["headers"])
    return None


def _celery(inp: _Input) -> _Found:
    h = inp.headers
    if not _celery_headers(h):
        envelope = _kombu_envelope_headers(inp.body)
        if envelope is None or not _celery_headers(envelope):
            return {}
        h = envelope
    task = _text(h.get("task"), MAX_NAME)
    retries = _int(h.get("retries"))
    return {
        "origin": f"celery:{task}",
        "attempt_count": _attempts(retries + 1) if retries is not None and retries >= 0 else None,
        "extras": {
            "celery_task": task,
            "celery_id": _text(h.get("id"), MAX_NAME),
            "retries": retries,
            "argsrepr": _text(h.get("argsrepr"), MAX_EXTRA_TEXT),
            "kwargsrepr": _text(h.get("kwargsrepr"), MAX_EXTRA_TEXT),
            "celery_origin": _text(h.get("origin"), MAX_NAME),
            "eta": _text(h.get("eta"), MAX_NAME),
            "expires": _text(h.get("expires"), MAX_NAME),
        },
    }


def _celery_headers(h: _Headers) -> bool:
    """Celery protocol 2: a task name, a task id, and lang "py" (or the argsrepr it adds)."""
    has_marker = h.get("lang") == "py" or h.get("argsrepr") is not None
    return has_marker and bool(_text(h.get("task"), MAX_NAME)) and h.get("id") is not None


def _application(inp: _Input) -> _Found:
    h = inp.headers
    found: _Found = {}
    topic = _text(h.get("x-original-topic"), MAX_NAME)
    if topic:  # Spring Cloud Stream's Kafka binder
        partition = _java_int(h.get("x-original-partition"), (4,))
        found = _kafka_position(topic, partition, _java_int(h.get("x-original-offset"), (8,)))
    else:  # Spring AMQP RepublishMessageRecoverer, Spring Cloud Stream's Rabbit binder
        exchange = h.get("x-original-exchange")
        key = _text(h.get("x-original-routingKey"), MAX_NAME)
        if exchange is not None or key:
            found["origin"] = _amqp_origin(_text(exchange, MAX_NAME), [key] if key else [], "")
    return _exception(
        found,
        _text(h.first("x-exception-class", "x-exception-type", "x-exception-fqcn"), MAX_ERROR_CLASS),
        _text(h.get("x-exception-message"), MAX_ERROR_MESSAGE),
        _text(h.get("x-exception-stacktrace"), MAX_STACK_TRACE),
    )


def _x_death(inp: _Input) -> _Found:
    """RabbitMQ's dead-lettering record: one x-death entry per (queue, reason), most recently
    updated first, each with its count and the time of its latest death; x-first-death-*
    name the first death."""
    h = inp.headers
    raw = h.get("x-death")
    deaths = [d for d in raw[:_MAX_DEATHS] if isinstance(d, dict)] if isinstance(raw, list) else []
    queue = _text(h.get("x-first-death-queue"), MAX_NAME)
    reason = _text(h.get("x-first-death-reason"), MAX_REASON)
    if not deaths and not queue and not reason:
        return {}
    same_queue = [d for d in deaths if queue and _text(d.get("queue"), MAX_NAME) == queue]
    same_death = [d for d in same_queue if _text(d.get("reason"), MAX_REASON) == reason]
    first = (same_death or same_queue or deaths or [{}])[-1]
    queue = queue or _text(first.get("queue"), MAX_NAME)
    reason = reason or _text(first.get("reason"), MAX_REASON)
    exchange = h.get("x-first-death-exchange")  # "" is the default exchange
    exchange = first.get("exchange") if exchange is None else exchange
    keys = first.get("routing-keys")
    keys = [k for k in (_text(k, MAX_NAME) for k in (keys[:10] if isinstance(keys, list) else [keys])) if k]
    counts = [c for c in (_int(d.get("count")) for d in deaths) if c is not None and c > 0]
    times = [t for t in (_when(d.get("time")) for d in deaths) if t is not None]
    expiration = [d.get("original-expiration") for d in (first, *deaths) if d.get("original-expiration") is not None]
    return {
        "origin": _amqp_origin(None if exchange is None else _text(exchange, MAX_NAME), keys, queue),
        "reason": reason,
        "attempt_count": _attempts(sum(min(c, MAX_ATTEMPTS) for c in counts)) if counts else None,
        "first_failed_at": min(times, default=None),
        "last_failed_at": max(times, default=None),
        "extras": {
            "deaths": [
                {
                    "queue": _text(d.get("queue"), MAX_NAME),
                    "reason": _text(d.get("reason"), MAX_REASON),
                    "count": _int(d.get("count")),
                    "time": _when(d.get("time")),
                }
                for d in deaths[:20]
            ],
            "original_expiration": _text(expiration[0] if expiration else h.get("original-expiration"), MAX_NAME),
            "delivery_count": _int(h.get("x-delivery-count")),
        },
    }


def _broker(inp: _Input) -> _Found:
    """What the broker itself says, per kind."""
    h, props = inp.headers, inp.properties
    replayed_from = _text(h.get("x-original-message-id"), MAX_SOURCE_MESSAGE_ID)
    if inp.kind == "rabbitmq":
        message_id = _text(props.get("message_id"), MAX_SOURCE_MESSAGE_ID)
        return {"source_message_id": message_id or replayed_from}
    if inp.kind == "kafka":
        # The record's timestamp is when it was written to the DLQ topic: Spring's and
        # Connect's DLQ producers set none, so the producer stamps the time of failure.
        return {"last_failed_at": _when(props.get("timestamp")), "source_message_id": replayed_from}
    if inp.kind != "sqs":
        return {}
    source_arn = _text(props.get("DeadLetterQueueSourceArn"), MAX_ORIGIN)
    sources = list(dict.fromkeys(s for s in (_text(x, MAX_ORIGIN) for x in inp.dlq_sources[:100]) if s))
    origin = source_arn or (sources[0] if len(sources) == 1 else "")
    sent = _when(props.get("SentTimestamp"))
    return {
        "origin": f"sqs:{origin}" if origin else "",
        "reason": "maxReceiveCount exceeded" if source_arn or sources else "",
        "attempt_count": _attempts(props.get("ApproximateReceiveCount")),
        "first_failed_at": _when(props.get("ApproximateFirstReceiveTimestamp")),
        "source_message_id": replayed_from,
        "extras": {
            "possible_sources": sources[:20] if not origin and len(sources) > 1 else None,
            "sent_at": sent,
            "message_group_id": _text(props.get("MessageGroupId"), MAX_NAME),
            "aws_trace_header": _text(props.get("AWSTraceHeader"), MAX_EXTRA_TEXT),
        },
    }


_Detector = Callable[[_Input], _Found]
# Highest precedence first (see the module docstring).
_DETECTORS: tuple[tuple[str, _Detector], ...] = (
    ("spring-kafka", _spring_kafka),
    ("kafka-connect", _kafka_connect),
    ("kafka-streams", _kafka_streams),
    ("share-group", _share_group),
    ("masstransit", _masstransit),
    ("nservicebus", _nservicebus),
    ("celery", _celery),
    ("application", _application),
    ("x-death", _x_death),
    ("broker", _broker),
)
_BROKER_DETECTORS = ("x-death", "share-group", "broker")


# Lower-case header-name prefixes of each detector that reads headers only. Such a detector runs
# only when a header of its family is there: capture normalises every message, most carry few of
# these, and a detector given none of its headers finds nothing. "broker" always runs; "celery"
# also looks for a kombu envelope in the body (see _may_be_celery).
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("spring-kafka", ("kafka_",)),
    ("kafka-connect", ("__connect.errors.",)),
    ("kafka-streams", ("__streams.errors.",)),
    ("share-group", ("__dlq.errors.",)),
    ("masstransit", ("mt-",)),
    ("nservicebus", ("nservicebus.",)),
    ("application", ("x-original-", "x-exception-")),
    ("x-death", ("x-death", "x-first-death-")),
)
_ANY_FAMILY = tuple(prefix for _, prefixes in _FAMILIES for prefix in prefixes)


def _families(names: tuple[str, ...]) -> frozenset[str]:
    """The detectors whose header family is present. A DLQ's messages share a few sets of header
    names, so the answer is remembered per set (a bounded cache, emptied when full)."""
    present = _FAMILY_CACHE.get(names)
    if present is None:
        found: set[str] = set()
        for name in names:
            if name.startswith(_ANY_FAMILY):
                found.update(detector for detector, prefixes in _FAMILIES if name.startswith(prefixes))
        if len(_FAMILY_CACHE) >= _FAMILY_CACHE_SIZE:
            _FAMILY_CACHE.clear()
        present = _FAMILY_CACHE[names] = frozenset(found)
    return present


_FAMILY_CACHE: dict[tuple[str, ...], frozenset[str]] = {}
_FAMILY_CACHE_SIZE = 1024


def _may_be_celery(names: tuple[str, ...], inp: _Input) -> bool:
    """Celery task headers ("task" is one of them), or a body _kombu_envelope_headers can read:
    base64 of a JSON object, or a JSON object that names "headers", within the size limit."""
    if "task" in names:
        return True
    body = inp.body
    if not isinstance(body, bytes | bytearray) or not 2 <= len(body) <= MAX_ENVELOPE_BODY:
        return False
    return body.startswith(b"eyJ") or (body.startswith(b"{") and b'"headers"' in body)


_MAPPING_READERS: dict[str, Callable[[Any], Any]] = {
    **{name: (lambda value, limit=limit: _text(value, limit)) for name, limit in _TEXT_LIMITS.items()},
    "attempt_count": _attempts,
    "first_failed_at": _when,
    "last_failed_at": _when,
}


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _merge(found: list[tuple[str, _Found]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each field from the first detector that has it; reason from the broker first."""
    values: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for _, part in reversed(found):  # lowest precedence first, so higher ones overwrite
        for name, value in part.items():
            if name == "extras":
                if value:
                    extras.update({k: v for k, v in value.items() if _present(v)})
            elif name in _FIELD_SET and _present(value):
                values[name] = value
    broker_reason = other_reason = None
    from_broker: dict[str, Any] = {}
    for detector, part in found:  # highest precedence first: the first present value counts
        reason = part.get("reason")
        if detector in _BROKER_DETECTORS:
            if broker_reason is None and _present(reason):
                broker_reason = reason
            for name in ("origin", "attempt_count"):
                if name not in from_broker and _present(part.get(name)):
                    from_broker[name] = part[name]
        elif other_reason is None and _present(reason):
            other_reason = reason
    values["reason"] = broker_reason if broker_reason is not None else other_reason if other_reason is not None else ""
    for name in ("origin", "attempt_count"):
        if name in from_broker and from_broker[name] != values.get(name):
            extras[f"broker_{name}"] = from_broker[name]
    return values, extras


# Who may name the place a letter is replayed to, best first (invariant 14; the module docstring).
_REPLAY_ORIGIN_SOURCES: tuple[tuple[str, frozenset[str]], ...] = (
    ("broker", frozenset(_BROKER_DETECTORS)),
    ("framework", frozenset({"spring-kafka", "kafka-connect", "kafka-streams"})),
    ("headers", frozenset({"masstransit", "nservicebus", "application"})),
)


def _queue_place(name: str) -> str:
    return f"queue:{name}" if name and " " not in name else ""


def _place(kind: str, detector: str, part: _Found) -> str:
    """The place on a ``kind`` broker this detector's origin names, or "" (Celery names a task;
    an x-death copied onto a Kafka record names a RabbitMQ queue)."""
    origin = part.get("origin")
    if not isinstance(origin, str) or not origin:
        return ""
    if detector == "masstransit":  # rabbitmq://host/vhost/queue?bind=true, amazonsqs://region/queue
        address = origin.partition(":")[2]
        return _queue_place(address.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if "/" in address else "")
    if detector == "nservicebus":  # "queue@machine" or "queue"
        return _queue_place(origin.partition(":")[2].split("@", 1)[0])
    return origin if kind and origin.startswith(kind + ":") and origin != kind + ":" else ""


def _replay_origin(kind: str, found: list[tuple[str, _Found]]) -> dict[str, str]:
    """``replay_origin`` and ``replay_origin_source``: the first place a source names, by the
    order of _REPLAY_ORIGIN_SOURCES, whatever the order in which the origin field was filled."""
    for source, detectors in _REPLAY_ORIGIN_SOURCES:
        for detector, part in found:
            if detector in detectors:
                place = _place(kind, detector, part)
                if place:
                    return {"replay_origin": place, "replay_origin_source": source}
    return {}


def _normalise(
    kind: Any,
    headers: Any,
    properties: Any,
    body: Any,
    header_mapping: Any,
    dlq_sources: Any,
) -> Failure:
    if isinstance(dlq_sources, str):
        dlq_sources = (dlq_sources,)
    inp = _Input(
        kind=kind if isinstance(kind, str) else "",
        headers=_Headers(headers),
        properties=properties if isinstance(properties, dict) else {},
        body=body,
        dlq_sources=tuple(dlq_sources) if isinstance(dlq_sources, list | tuple) else (),
    )
    found: list[tuple[str, _Found]] = []
    names = tuple([k.lower() for k in inp.headers.raw if isinstance(k, str)])
    present = _families(names)
    celery = _may_be_celery(names, inp)
    for name, detect in _DETECTORS:
        if name not in present and name != "broker" and not (celery and name == "celery"):
            continue
        try:
            found.append((name, detect(inp)))
        except Exception:  # invariant 10: one hostile header never costs the other sources
            logger.warning("failure metadata: the %s detector failed", name, exc_info=True)
    values, extras = _merge(found)
    extras.update(_replay_origin(inp.kind, found))
    if header_mapping is not None and isinstance(header_mapping, Mapping):
        for name, header in list(header_mapping.items())[:50]:
            if name in _MAPPING_READERS and isinstance(header, str) and header:
                value = _MAPPING_READERS[name](inp.headers.get(header))
                if _present(value):
                    values[name] = value
    attempts = values.get("attempt_count")
    texts = {}
    for name, limit in _TEXT_LIMITS.items():
        value = values.get(name)
        texts[name] = _clean(value, limit) if value and isinstance(value, str) else ""
    return Failure(
        **texts,
        attempt_count=_attempts(attempts) if isinstance(attempts, int) else None,
        first_failed_at=values.get("first_failed_at"),
        last_failed_at=values.get("last_failed_at"),
        extras={_clean(str(k), MAX_NAME): _extra(v, depth=1) for k, v in extras.items()} if extras else {},
    )


def normalise(
    kind: str,
    headers: dict[str, Any],
    properties: dict[str, Any],
    *,
    body: bytes = b"",
    header_mapping: dict[str, str] | None = None,
    dlq_sources: Sequence[str] = (),
) -> Failure:
    """The failure a dead letter carries, from its headers, properties and (for a kombu
    envelope) body. ``kind`` is "rabbitmq", "sqs" or "kafka"; ``header_mapping`` is the DLQ's
    ``{field: header name}`` override, applied last; ``dlq_sources`` are the source queues known
    from redrive policies (SQS: the origin when the message names none and there is one).

    Never raises (invariant 10): malformed values become empty fields."""
    try:
        return _normalise(kind, headers, properties, body, header_mapping, dlq_sources)
    except Exception:  # invariant 10: a capture job never fails on a message's metadata
        logger.warning("failure metadata: normalisation failed", exc_info=True)
        return Failure()
