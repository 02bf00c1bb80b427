"""Writing captured messages: one multi-row upsert per batch (invariant 1).

A batch is committed in one transaction together with its capture pass's counters; only then
may the caller remove the messages from the broker. The upsert is idempotent on
(dlq, identity): a message seen again only increments ``times_seen``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from recovery.brokers.base import ReceivedMessage
from recovery.capture.identity import capture_identity
from recovery.metadata import normalise
from recovery.models import DeadLetterQueue, DeadLetterState

COLUMNS = (
    "dlq_id", "capture_pass_id", "identity", "body", "body_size", "content_type", "content_hash", "headers",
    "properties", "captured_at", "state", "times_seen", "origin", "reason", "error_class", "error_message",
    "stack_trace", "attempt_count", "first_failed_at", "last_failed_at", "source_message_id", "failure_extras",
)  # fmt: skip

# Built from the constant column list above; every value is a query parameter.
_UPSERT = (
    f"INSERT INTO recovery_deadletter ({', '.join(COLUMNS)}) VALUES {{values}} "  # noqa: S608
    "ON CONFLICT (dlq_id, identity) DO UPDATE SET times_seen = recovery_deadletter.times_seen + EXCLUDED.times_seen "
    "RETURNING identity, (xmax = 0) AS inserted"
)


@dataclass
class StoreResult:
    received: int = 0
    captured: int = 0
    duplicates: int = 0
    oversize: int = 0
    removable: list[ReceivedMessage] = field(default_factory=list)


def _content_type(kind: str, message: ReceivedMessage) -> str:
    props, headers = message.properties, message.headers
    value = props.get("content_type") or headers.get("content-type") or headers.get("contentType") or ""
    if isinstance(value, dict):  # SQS attribute {"DataType": ..., "StringValue": ...}
        value = value.get("StringValue", "")
    return str(value)[:200]


def _row(dlq: DeadLetterQueue, pass_id: int | None, identity: str, message: ReceivedMessage, times: int, now) -> tuple:
    kind = dlq.broker.kind
    oversize = message.size > settings.RECOVERY_CAPTURE_MAX_BODY
    failure = normalise(
        kind,
        message.headers,
        message.properties,
        body=message.body if not oversize else b"",
        header_mapping=dlq.header_mapping or None,
        dlq_sources=dlq.sources or (),
    )
    return (
        dlq.pk,
        pass_id,
        identity,
        b"" if oversize else message.body,
        message.size,
        _content_type(kind, message),
        hashlib.sha256(message.body).hexdigest(),
        Jsonb(message.headers),
        Jsonb(message.properties),
        now,
        DeadLetterState.OVERSIZE if oversize else DeadLetterState.CAPTURED,
        times,
        failure.origin,
        failure.reason,
        failure.error_class,
        failure.error_message,
        failure.stack_trace,
        failure.attempt_count,
        failure.first_failed_at,
        failure.last_failed_at,
        failure.source_message_id,
        Jsonb(failure.extras),
    )


def dead_letters_upsert(*, dlq: DeadLetterQueue, pass_id: int | None, messages: list[ReceivedMessage]) -> StoreResult:
    """Insert new letters, count the ones already known; must run inside the caller's transaction.

    Oversize messages (body above RECOVERY_CAPTURE_MAX_BODY) are recorded with their metadata
    and no body, and are not removable: they stay on the broker, never lost.
    """
    result = StoreResult(received=len(messages))
    if not messages:
        return result
    kind = dlq.broker.kind
    grouped: OrderedDict[str, list[ReceivedMessage]] = OrderedDict()
    for message in messages:
        grouped.setdefault(capture_identity(kind, message), []).append(message)
    now = timezone.now()
    rows = [_row(dlq, pass_id, identity, group[0], len(group), now) for identity, group in grouped.items()]
    placeholder = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(values=", ".join([placeholder] * len(rows))), [v for row in rows for v in row])
        inserted = dict(cursor.fetchall())
    limit = settings.RECOVERY_CAPTURE_MAX_BODY
    for identity, group in grouped.items():
        if inserted.get(identity):
            result.captured += 1
            result.duplicates += len(group) - 1
        else:
            result.duplicates += len(group)
        if group[0].size > limit:
            result.oversize += len(group)
        else:
            result.removable.extend(group)
    return result
