"""Writing captured messages: one array upsert per batch (invariant 1).

A batch is committed in one transaction together with its capture pass's counters; only then
may the caller remove the messages from the broker, and then mark their rows removed. The
upsert is idempotent on (dlq, identity): a message seen again only increments ``times_seen``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from recovery.brokers.base import ReceivedMessage
from recovery.capture.identity import capture_identities
from recovery.metadata import normalise
from recovery.models import CaptureMode, DeadLetter, DeadLetterQueue, DeadLetterState

# (column, PostgreSQL array type): the upsert sends one array per column, so the statement's
# text never changes with the batch size and parses once.
COLUMNS = (
    ("dlq_id", "bigint"), ("capture_pass_id", "bigint"), ("identity", "text"), ("body", "bytea"),
    ("body_size", "bigint"), ("content_type", "text"), ("content_hash", "text"), ("headers", "jsonb"),
    ("properties", "jsonb"), ("captured_at", "timestamptz"), ("state", "text"), ("times_seen", "integer"),
    ("origin", "text"), ("reason", "text"), ("error_class", "text"), ("error_message", "text"),
    ("stack_trace", "text"), ("attempt_count", "integer"), ("first_failed_at", "timestamptz"),
    ("last_failed_at", "timestamptz"), ("source_message_id", "text"), ("failure_extras", "jsonb"),
)  # fmt: skip

UPSERT = (
    f"INSERT INTO recovery_deadletter ({', '.join(c for c, _ in COLUMNS)}) "  # noqa: S608 - constant text
    f"SELECT * FROM unnest({', '.join(f'%b::{t}[]' for _, t in COLUMNS)}) "
    "ON CONFLICT (dlq_id, identity) DO UPDATE SET times_seen = recovery_deadletter.times_seen + EXCLUDED.times_seen "
    "RETURNING id, identity, (xmax = 0) AS inserted"
)


@dataclass
class StoreResult:
    received: int = 0
    captured: int = 0
    duplicates: int = 0
    oversize: int = 0
    removable: list[ReceivedMessage] = field(default_factory=list)
    removable_rows: list[int] = field(default_factory=list)


def _content_type(message: ReceivedMessage) -> str:
    props, headers = message.properties, message.headers
    value = props.get("content_type") or headers.get("content-type") or headers.get("contentType") or ""
    if isinstance(value, dict):  # SQS attribute {"DataType": ..., "StringValue": ...}
        value = value.get("StringValue", "")
    return str(value)[:200]


def _row(dlq: DeadLetterQueue, pass_id: int | None, identity: str, message: ReceivedMessage, times: int,
         now: datetime) -> tuple:  # fmt: skip
    oversize = message.size > settings.RECOVERY_CAPTURE_MAX_BODY
    failure = normalise(
        dlq.broker.kind,
        message.headers,
        message.properties,
        body=message.body if not oversize else b"",
        header_mapping=dlq.header_mapping or None,
        dlq_sources=dlq.sources or (),
    )
    return (
        dlq.pk, pass_id, identity, b"" if oversize else message.body, message.size, _content_type(message),
        hashlib.sha256(message.body).hexdigest(), Jsonb(message.headers), Jsonb(message.properties), now,
        DeadLetterState.OVERSIZE if oversize else DeadLetterState.CAPTURED, times, failure.origin, failure.reason,
        failure.error_class, failure.error_message, failure.stack_trace, failure.attempt_count,
        failure.first_failed_at, failure.last_failed_at, failure.source_message_id, Jsonb(failure.extras),
    )  # fmt: skip


def dead_letters_upsert(*, dlq: DeadLetterQueue, pass_id: int | None, messages: list[ReceivedMessage]) -> StoreResult:
    """Insert new letters, count the ones already known; must run inside the caller's transaction.

    Oversize messages (body above RECOVERY_CAPTURE_MAX_BODY) are recorded with their metadata
    and no body; from a drained DLQ they are not removable: they stay on the broker, never lost.
    """
    result = StoreResult(received=len(messages))
    if not messages:
        return result
    grouped: dict[str, list[ReceivedMessage]] = {}
    for identity, message in zip(capture_identities(dlq, messages), messages, strict=True):
        grouped.setdefault(identity, []).append(message)
    now = timezone.now()
    rows = [_row(dlq, pass_id, identity, group[0], len(group), now) for identity, group in grouped.items()]
    columns = [list(values) for values in zip(*rows, strict=True)]
    connection.ensure_connection()
    # A plain psycopg cursor binds on the server and %b sends the arrays in binary: Django's
    # client-side binding would quote every body into the SQL text.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(UPSERT, columns)
        returned = {identity: (row_id, inserted) for row_id, identity, inserted in cursor.fetchall()}
    keep_oversize = dlq.capture_mode == CaptureMode.DRAIN
    for identity, group in grouped.items():
        row_id, inserted = returned[identity]
        result.captured += 1 if inserted else 0
        result.duplicates += len(group) - (1 if inserted else 0)
        if group[0].size > settings.RECOVERY_CAPTURE_MAX_BODY:
            result.oversize += len(group)
            if keep_oversize:
                continue
        result.removable.extend(group)
        result.removable_rows.append(row_id)
    return result


def dead_letters_mark_removed(row_ids: list[int]) -> None:
    """Record that the broker confirmed the removal of these rows' messages."""
    if row_ids:
        DeadLetter.objects.filter(pk__in=row_ids, removed_at__isnull=True).update(removed_at=timezone.now())
