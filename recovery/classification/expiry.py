"""When the broker would drop a dead letter's original message (issue 5, "expires in").

Each broker counts from its own clock, read from what the adapters store
(recovery.brokers.*: ``_received_message`` / ``_received``):

- SQS: MessageRetentionPeriod from the original enqueue. A redrive keeps the message's
  ``SentTimestamp`` system attribute (epoch ms, in properties), so expiry is that + retention.
- Kafka: retention.ms from the record's ``timestamp`` property (epoch ms; None when the record
  has none, and then the expiry is unknown).
- RabbitMQ: a per-message ``expiration`` property (ms, as text) wins over the queue's
  x-message-ttl; both count from when the message entered the DLQ, the latest ``time`` among
  its ``x-death`` entries. No death time, no expiry.

``retention_seconds`` is the DLQ's (read from the broker); None means unknown or unlimited.
Pure and total: malformed values give None, never an error (invariant 10).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

_MAX_SECONDS = 100 * 365 * 86400


def _number(value: Any) -> float | None:
    if isinstance(value, dict) and "DataType" in value:  # SQS attribute shape
        value = value.get("StringValue")
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip()[:32])
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _from_ms(value: Any) -> datetime | None:
    number = _number(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _instant(value: Any) -> datetime | None:
    """An x-death time: epoch seconds (pika's AMQP timestamp) or ISO text (json_safe of a datetime)."""
    if isinstance(value, str) and not value.strip().replace(".", "", 1).isdigit():
        try:
            parsed = datetime.fromisoformat(value.strip()[:64])
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    number = _number(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _after(start: datetime | None, seconds: float | None) -> datetime | None:
    if start is None or seconds is None or not 0 <= seconds <= _MAX_SECONDS:
        return None
    try:
        return start + timedelta(seconds=seconds)
    except OverflowError:
        return None


def last_death(headers: Any) -> datetime | None:
    deaths = headers.get("x-death") if isinstance(headers, dict) else None
    times = [_instant(d.get("time")) for d in deaths[:50] if isinstance(d, dict)] if isinstance(deaths, list) else []
    return max((t for t in times if t is not None), default=None)


def expires_at(*, kind: str, headers: Any, properties: Any, retention_seconds: int | None) -> datetime | None:
    """The broker-side expiry of one dead letter, or None when the broker does not say."""
    props = properties if isinstance(properties, dict) else {}
    if kind == "sqs":
        return _after(_from_ms(props.get("SentTimestamp")), retention_seconds)
    if kind == "kafka":
        return _after(_from_ms(props.get("timestamp")), retention_seconds)
    if kind == "rabbitmq":
        ttl_ms = _number(props.get("expiration"))
        seconds = ttl_ms / 1000 if ttl_ms is not None else retention_seconds
        return _after(last_death(headers), seconds)
    return None
