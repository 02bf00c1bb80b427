"""Writing captured messages: one staged upsert per batch (invariant 1).

A batch is committed in one transaction together with its capture pass's counters; only then
may the caller remove the messages from the broker, and then mark their rows removed. The
upsert is idempotent on (dlq, identity): a message seen again only increments ``times_seen``.

Writing is split in two so that a pipelined pass can overlap them (recovery/capture/pipeline.py):
``dead_letters_prepare`` does the per-message work without the database (hashes, JSON text,
normalised failure); ``dead_letters_write`` resolves identities and upserts. The rows travel by
binary COPY into a temporary staging table and go on with one INSERT ... SELECT ... ON CONFLICT:
psycopg formats COPY rows in C, where array parameters cost a Python call per element.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from recovery.brokers.base import ReceivedMessage
from recovery.capture.identity import capture_identities, content_digest, stable_json
from recovery.capture.parking import ParkingError, body_park
from recovery.metadata import normalise
from recovery.models import BrokerKind, DeadLetterQueue, DeadLetterState

# (column, PostgreSQL type) in row order. JSON columns are staged as the text stable_json made
# (the digest of an AMQP message reads the same text) and cast to jsonb by the upsert.
COLUMNS = (
    ("dlq_id", "bigint"), ("capture_pass_id", "bigint"), ("identity", "text"), ("body", "bytea"),
    ("body_size", "bigint"), ("content_type", "text"), ("content_hash", "text"), ("headers", "jsonb"),
    ("properties", "jsonb"), ("captured_at", "timestamptz"), ("state", "text"), ("times_seen", "integer"),
    ("origin", "text"), ("reason", "text"), ("error_class", "text"), ("error_message", "text"),
    ("stack_trace", "text"), ("attempt_count", "integer"), ("first_failed_at", "timestamptz"),
    ("last_failed_at", "timestamptz"), ("source_message_id", "text"), ("failure_extras", "jsonb"),
    ("position", "numeric"), ("parked_bucket", "text"), ("parked_key", "text"),
)  # fmt: skip
_IDENTITY, _TIMES_SEEN, _POSITION = 2, 11, 22  # filled in by dead_letters_write (position when the broker gives none)
# jsonb and numeric travel as text (JSON as stable_json made it; positions beyond bigint as digits).
_CAST = ("jsonb", "numeric")
_STAGED_TYPES = ["text" if kind in _CAST else kind for _, kind in COLUMNS]
_NAMES = ", ".join(name for name, _ in COLUMNS)

# One per database session, emptied at every commit; the version suffix keeps a session that a
# pooler hands from an older release from meeting a different shape under the same name.
_STAGING = "recovery_capture_staging_v2"
_CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} "
    f"({', '.join(f'{name} {kind}' for (name, _), kind in zip(COLUMNS, _STAGED_TYPES, strict=True))}) "
    "ON COMMIT DELETE ROWS"
)
_COPY = f"COPY {_STAGING} ({_NAMES}) FROM STDIN (FORMAT BINARY)"
_UPSERT = (
    f"INSERT INTO recovery_deadletter ({_NAMES}) "  # noqa: S608 - constant text
    f"SELECT {', '.join(f'{name}::{kind}' if kind in _CAST else name for name, kind in COLUMNS)} FROM {_STAGING} "
    "ON CONFLICT (dlq_id, identity) DO UPDATE SET times_seen = recovery_deadletter.times_seen + EXCLUDED.times_seen, "
    # an oversize letter whose body could not be parked before gets the place this delivery parked it at
    "parked_bucket = CASE WHEN recovery_deadletter.parked_key = '' "
    "THEN EXCLUDED.parked_bucket ELSE recovery_deadletter.parked_bucket END, "
    "parked_key = CASE WHEN recovery_deadletter.parked_key = '' "
    "THEN EXCLUDED.parked_key ELSE recovery_deadletter.parked_key END "
    "RETURNING id, identity, (xmax = 0) AS inserted, parked_key"
)
# Positions for letters whose broker gives none (RabbitMQ, standard SQS): the order capture read them.
_NEXT_POSITIONS = "SELECT nextval('recovery_deadletter_position_seq') FROM generate_series(1, %s)"
# The ids travel as one array literal: psycopg would dump a list element by element in Python.
_MARK_REMOVED = "UPDATE recovery_deadletter SET removed_at = %s WHERE id = ANY(%s::bigint[]) AND removed_at IS NULL"


@dataclass
class StoreResult:
    received: int = 0
    captured: int = 0
    duplicates: int = 0
    oversize: int = 0
    unparked: int = 0  # oversize messages whose bytes could not be parked: left on the broker
    removable: list[ReceivedMessage] = field(default_factory=list)
    removable_rows: list[int] = field(default_factory=list)


@dataclass
class PreparedBatch:
    """A batch's rows as far as they can be worked out without the database: one row per message
    in ``COLUMNS`` order (identity and times_seen still open), and the AMQP content digests.
    ``parking_error``: why the bytes of an oversize message could not be parked (its row then has
    no parked_key, and the message stays on the broker unless an earlier delivery parked it)."""

    messages: list[ReceivedMessage]
    rows: list[list[Any]]
    digests: list[str] | None = None
    parking_error: str = ""


def _content_type(message: ReceivedMessage) -> str:
    props, headers = message.properties, message.headers
    value = props.get("content_type") or headers.get("content-type") or headers.get("contentType") or ""
    if isinstance(value, dict):  # SQS attribute {"DataType": ..., "StringValue": ...}
        value = value.get("StringValue", "")
    return str(value)[:200]


def _native_position(kind: str, message: ReceivedMessage) -> str | None:
    """The message's place in its DLQ as the broker numbers it (digits), if it does: the SQS FIFO
    SequenceNumber (it grows within a message group), the Kafka offset (within its partition)."""
    if kind == BrokerKind.KAFKA:
        value: Any = message.properties.get("offset")
    elif kind == BrokerKind.SQS:
        value = message.properties.get("SequenceNumber")
    else:
        return None
    text = str(value) if value is not None else ""
    return text if text.isdigit() and len(text) <= 40 else None


def dead_letters_prepare(
    *, dlq: DeadLetterQueue, pass_id: int | None, messages: list[ReceivedMessage], now: datetime | None = None
) -> PreparedBatch:
    """The rows of a batch, without touching the database: bodies, hashes, headers and
    properties as JSON text, and the normalised failure (invariant 10: ``normalise`` never
    raises). An oversize body (above RECOVERY_CAPTURE_MAX_BODY) is parked in object storage
    (recovery.capture.parking) and its row records where; one that could not be parked has no
    place recorded (``parking_error`` says why) and must stay on the broker (invariant 1)."""
    kind = dlq.broker.kind
    mapping, sources = dlq.header_mapping or None, dlq.sources or ()
    max_body = settings.RECOVERY_CAPTURE_MAX_BODY
    now = now or timezone.now()
    digests: list[str] | None = [] if kind == BrokerKind.RABBITMQ else None
    rows = []
    prepared = PreparedBatch(messages=messages, rows=rows, digests=digests)
    for message in messages:
        oversize = message.size > max_body
        body = b"" if oversize else message.body
        content_hash = hashlib.sha256(message.body).hexdigest()
        parked_bucket = parked_key = ""
        if oversize:
            try:
                parked = body_park(dlq_id=dlq.pk, data=message.body, sha256=content_hash)
            except ParkingError as exc:
                prepared.parking_error = prepared.parking_error or str(exc)
            else:
                parked_bucket, parked_key = parked.bucket, parked.key
        headers = stable_json(message.headers)
        if digests is not None:
            digests.append(content_digest(message, body_sha256=content_hash, headers_json=headers))
        failure = normalise(
            kind, message.headers, message.properties, body=body, header_mapping=mapping, dlq_sources=sources
        )
        rows.append([
            dlq.pk, pass_id, None, body, message.size, _content_type(message), content_hash, headers,
            stable_json(message.properties), now, DeadLetterState.OVERSIZE if oversize else DeadLetterState.CAPTURED,
            1, failure.origin, failure.reason, failure.error_class, failure.error_message, failure.stack_trace,
            failure.attempt_count, failure.first_failed_at, failure.last_failed_at, failure.source_message_id,
            stable_json(failure.extras) if failure.extras else "{}", _native_position(kind, message),
            parked_bucket, parked_key,
        ])  # fmt: skip
    return prepared


def dead_letters_write(
    *, dlq: DeadLetterQueue, prepared: PreparedBatch, removed_rows: Collection[int] = ()
) -> StoreResult:
    """Insert new letters, count the ones already known; must run inside the caller's
    transaction. AMQP identities are matched against the rows still on the broker: rows of
    earlier batches must be marked removed by then, or be listed in ``removed_rows``.

    An oversize message is removable once its bytes are parked (its row says where); one whose
    parking failed is recorded with its metadata and left on the broker, never lost: a later
    pass recognises it by its identity and parks it then.
    """
    messages = prepared.messages
    result = StoreResult(received=len(messages))
    if not messages:
        return result
    grouped: dict[str, list[int]] = {}
    for index, identity in enumerate(capture_identities(dlq, messages, prepared.digests, removed_rows=removed_rows)):
        grouped.setdefault(identity, []).append(index)
    connection.ensure_connection()
    # A plain psycopg cursor on Django's connection (same transaction): Django's cursor has no COPY.
    with psycopg.Cursor(connection.connection) as cursor:
        unnumbered = [indexes[0] for indexes in grouped.values() if prepared.rows[indexes[0]][_POSITION] is None]
        if unnumbered:
            cursor.execute(_NEXT_POSITIONS, [len(unnumbered)])
            for index, (number,) in zip(unnumbered, sorted(cursor.fetchall()), strict=True):
                prepared.rows[index][_POSITION] = str(number)
        cursor.execute(_CREATE_STAGING)
        with cursor.copy(_COPY) as copy:
            copy.set_types(_STAGED_TYPES)
            for identity, indexes in grouped.items():
                row = prepared.rows[indexes[0]]
                row[_IDENTITY], row[_TIMES_SEEN] = identity, len(indexes)
                copy.write_row(row)
        cursor.execute(_UPSERT)
        returned = {identity: (row_id, inserted, parked) for row_id, identity, inserted, parked in cursor.fetchall()}
    max_body = settings.RECOVERY_CAPTURE_MAX_BODY
    for identity, indexes in grouped.items():
        row_id, inserted, parked = returned[identity]
        result.captured += 1 if inserted else 0
        result.duplicates += len(indexes) - (1 if inserted else 0)
        if messages[indexes[0]].size > max_body:
            result.oversize += len(indexes)
            if not parked:  # neither now nor by an earlier delivery
                result.unparked += len(indexes)
                continue
        result.removable.extend(messages[i] for i in indexes)
        result.removable_rows.append(row_id)
    return result


def dead_letters_upsert(*, dlq: DeadLetterQueue, pass_id: int | None, messages: list[ReceivedMessage]) -> StoreResult:
    """Prepare and write a batch in one go; must run inside the caller's transaction."""
    return dead_letters_write(dlq=dlq, prepared=dead_letters_prepare(dlq=dlq, pass_id=pass_id, messages=messages))


def dead_letters_mark_removed(row_ids: list[int], *, at: datetime | None = None) -> None:
    """Record that the broker confirmed the removal of these rows' messages (at ``at``, default
    now). Rows already marked keep their first time."""
    if row_ids:
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            ids = "{" + ",".join(map(str, row_ids)) + "}"
            cursor.execute(_MARK_REMOVED, [at or timezone.now(), ids])
