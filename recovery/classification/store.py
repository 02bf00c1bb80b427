"""The set-based SQL behind classification: each chunk of letters is read with one query and
written with one array UPDATE (plus one upsert of its fingerprint groups), so classifying after
every capture batch and re-classifying millions of letters cost a few statements per thousand
letters, not a statement per letter.

The writes are conditional on the letter's classification source (``classified_by``): a letter
classified meanwhile by someone else (a concurrent classifier, an operator by hand) is left
alone, and only the rows actually written count in the groups, so counters never double-count.
Statements have constant text (arrays, bound in binary) so each parses once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from django.db import connection

from recovery.classification.subject import LetterFacts

# The columns rules and fingerprints read; the body, headers and properties only when needed.
_FACTS = (
    "d.id, d.dlq_id, d.origin, d.reason, d.error_class, d.error_message, d.content_type, d.attempt_count, "
    "d.captured_at, d.first_failed_at"
)
_BODY_FULL = "d.body"
_BODY_PREFIX = "substring(d.body from 1 for 4096)"  # what search_text keeps
_BODY_NONE = "''::bytea"
_NO_JSON = "NULL::jsonb, NULL::jsonb"
_JSON = "d.headers, d.properties"

NEW_LETTERS_BY_ID = (
    "SELECT {facts}, {json}, {body}, d.stack_trace, d.content_hash, b.kind, q.retention_seconds, q.mask_emails, "
    "q.mask_card_numbers, d.identity, d.source_message_id "
    "FROM recovery_deadletter d JOIN recovery_deadletterqueue q ON q.id = d.dlq_id "
    "JOIN recovery_broker b ON b.id = q.broker_id WHERE d.classified_by = '' AND d.id = ANY(%s) ORDER BY d.id"
)
NEW_LETTERS_AFTER = (
    "SELECT {facts}, {json}, {body}, d.stack_trace, d.content_hash, b.kind, q.retention_seconds, q.mask_emails, "
    "q.mask_card_numbers, d.identity, d.source_message_id "
    "FROM recovery_deadletter d JOIN recovery_deadletterqueue q ON q.id = d.dlq_id "
    "JOIN recovery_broker b ON b.id = q.broker_id WHERE d.classified_by = '' AND d.id > %s "
    "AND (%s::bigint IS NULL OR d.dlq_id = %s) ORDER BY d.id LIMIT %s"
)
CLASSIFIED_AFTER = (
    "SELECT {facts}, {json}, {body}, d.category, d.disposition, d.classified_by, d.rule_id "
    "FROM recovery_deadletter d WHERE d.classified_by IN ('rule', 'default') AND d.id > %s ORDER BY d.id LIMIT %s"
)

FACTS_BY_ID = "SELECT {facts}, {json}, {body} FROM recovery_deadletter d WHERE d.id = ANY(%s)"
# The latest letters (letter_recent_idx), narrowed by a prefilter the caller builds from conditions.
RECENT_LETTERS = (
    "SELECT {facts}, {json}, {body} FROM (SELECT id, dlq_id, origin, reason, error_class, error_message, "
    "content_type, attempt_count, captured_at, first_failed_at, headers, properties, body FROM recovery_deadletter "
    "ORDER BY captured_at DESC, id DESC LIMIT %s) AS d WHERE {{where}} ORDER BY d.captured_at DESC, d.id DESC"
)
WINDOW_SIZE = (
    "SELECT count(*) FROM (SELECT 1 FROM recovery_deadletter ORDER BY captured_at DESC, id DESC LIMIT %s) AS r"
)

# The first letter of each duplicate key (recovery.classification.duplicates; letter_duplicate_key_idx).
FIRST_SAME_KEY = (
    "SELECT v.key, (SELECT d.id FROM recovery_deadletter d WHERE d.duplicate_key = v.key ORDER BY d.id LIMIT 1) "
    "FROM unnest(%b::text[]) AS v(key)"
)

WRITE_NEW = (
    "UPDATE recovery_deadletter AS d SET fingerprint = v.fingerprint, category = v.category, "
    "disposition = v.disposition, classified_by = v.classified_by, rule_id = v.rule_id, classified_at = %b, "
    "duplicate_of_id = v.duplicate_of, expires_at = v.expires_at, search_text = v.search_text, "
    "duplicate_key = v.duplicate_key, "
    # x-replay-id of a replayed message that came back: text (AMQP, Kafka) or an SQS attribute
    "replay_id = left(CASE jsonb_typeof(d.headers->'x-replay-id') WHEN 'string' THEN d.headers->>'x-replay-id' "
    "WHEN 'object' THEN coalesce(d.headers->'x-replay-id'->>'StringValue', '') ELSE '' END, 64) "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], "
    "%b::timestamptz[], %b::text[], %b::text[]) AS v(id, fingerprint, category, disposition, classified_by, rule_id, "
    "duplicate_of, expires_at, search_text, duplicate_key) WHERE d.id = v.id AND d.classified_by = '' RETURNING d.id"
)

WRITE_OUTCOMES = (
    "UPDATE recovery_deadletter AS d SET category = v.category, disposition = v.disposition, "
    "classified_by = v.classified_by, rule_id = v.rule_id, classified_at = %b "
    "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::bigint[]) "
    "AS v(id, category, disposition, classified_by, rule_id) "
    "WHERE d.id = v.id AND d.classified_by IN ('rule', 'default')"
)

# Rows in fingerprint order, so concurrent upserts lock groups in the same order (no deadlock).
UPSERT_GROUPS = (
    "INSERT INTO recovery_fingerprintgroup AS g (fingerprint, error_class, message_pattern, origin, letter_count, "
    "first_seen, last_seen, dlq_ids, sample_id) "
    "SELECT v.fingerprint, v.error_class, v.pattern, v.origin, v.n, v.first_seen, v.last_seen, "
    "v.dlq_ids::bigint[], v.sample_id FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], "
    "%b::timestamptz[], %b::timestamptz[], %b::text[], %b::bigint[]) "
    "AS v(fingerprint, error_class, pattern, origin, n, first_seen, last_seen, dlq_ids, sample_id) "
    "ORDER BY v.fingerprint "
    "ON CONFLICT (fingerprint) DO UPDATE SET letter_count = g.letter_count + EXCLUDED.letter_count, "
    "first_seen = LEAST(g.first_seen, EXCLUDED.first_seen), last_seen = GREATEST(g.last_seen, EXCLUDED.last_seen), "
    "dlq_ids = CASE WHEN EXCLUDED.dlq_ids <@ g.dlq_ids THEN g.dlq_ids "
    "ELSE ARRAY(SELECT DISTINCT x FROM unnest(g.dlq_ids || EXCLUDED.dlq_ids) AS x ORDER BY x) END, "
    "sample_id = COALESCE(g.sample_id, EXCLUDED.sample_id)"
)


@dataclass(slots=True)
class NewLetter:
    """A letter not classified yet: its facts plus what only the first classification needs."""

    facts: LetterFacts
    stack_trace: str
    content_hash: str
    kind: str
    retention_seconds: int | None
    mask_emails: bool = True
    mask_cards: bool = True
    identity: str = ""
    source_message_id: str = ""


@dataclass(slots=True)
class ClassifiedLetter:
    facts: LetterFacts
    outcome: tuple[str, str, str, int | None]  # category, disposition, classified_by, rule_id


def _select(template: str, *, body: str, json: bool) -> str:
    """``body``: "full", "prefix" (the first 4 KiB) or "none"."""
    column = {"full": _BODY_FULL, "prefix": _BODY_PREFIX, "none": _BODY_NONE}[body]
    return template.format(facts=_FACTS, json=_JSON if json else _NO_JSON, body=column)


def _json(value: Any) -> Any:
    """Django has psycopg hand jsonb over as text (its JSONField decodes it): decode it here."""
    return json.loads(value) if isinstance(value, str) else value


def _facts(row: Sequence[Any]) -> LetterFacts:
    body = row[12]
    return LetterFacts(
        id=row[0], dlq_id=row[1], origin=row[2], reason=row[3], error_class=row[4], error_message=row[5],
        content_type=row[6], attempt_count=row[7], captured_at=row[8], first_failed_at=row[9], headers=_json(row[10]),
        properties=_json(row[11]), body=body if isinstance(body, bytes) else bytes(body or b""),
    )  # fmt: skip


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows in binary: bodies travel as bytes, not as hex text twice their size."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def new_letters(*, ids: Sequence[int] | None, after_id: int, dlq_id: int | None, limit: int,
                full_body: bool) -> list[NewLetter]:  # fmt: skip
    body = "full" if full_body else "prefix"
    """Unclassified letters: the given ids, or the next ``limit`` after ``after_id``."""
    if ids is not None:
        rows = _fetch(_select(NEW_LETTERS_BY_ID, body=body, json=True), [list(ids)])
    else:
        rows = _fetch(_select(NEW_LETTERS_AFTER, body=body, json=True), [after_id, dlq_id, dlq_id, limit])
    return [NewLetter(_facts(r), r[13] or "", r[14], r[15], r[16], r[17], r[18], r[19], r[20] or "") for r in rows]


def classified_letters(*, after_id: int, limit: int, full_body: bool, headers: bool) -> list[ClassifiedLetter]:
    """Letters classified by a rule or by default, in id order after ``after_id``."""
    rows = _fetch(_select(CLASSIFIED_AFTER, body="full" if full_body else "none", json=headers), [after_id, limit])
    return [ClassifiedLetter(_facts(r), (r[13], r[14], r[15], r[16])) for r in rows]


def letters_by_id(ids: Sequence[int], *, full_body: bool, headers: bool) -> list[LetterFacts]:
    rows = _fetch(_select(FACTS_BY_ID, body="full" if full_body else "none", json=headers), [list(ids)])
    return [_facts(r) for r in rows]


def recent_letters(*, window: int, where: str, params: Sequence[Any], full_body: bool,
                   headers: bool) -> tuple[int, list[LetterFacts]]:  # fmt: skip
    """How many letters the latest ``window`` holds, and those of them passing ``where`` (SQL
    over the alias ``d``, newest first)."""
    size = _fetch(WINDOW_SIZE, [window])[0][0]
    sql = _select(RECENT_LETTERS, body="full" if full_body else "none", json=headers).replace("{where}", where)
    return size, [_facts(r) for r in _fetch(sql, [window, *params])]


def _execute(sql: str, params: Sequence[Any]) -> psycopg.Cursor:
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    cursor.execute(sql, params)
    return cursor


def first_same_key(keys: Sequence[str]) -> dict[str, int]:
    """The id of the first letter stored with each duplicate key."""
    if not keys:
        return {}
    with _execute(FIRST_SAME_KEY, [list(keys)]) as cursor:
        return {key: first for key, first in cursor.fetchall() if first is not None}


def write_new(rows: Sequence[tuple[Any, ...]], now: datetime) -> set[int]:
    """Write the first classification of these letters; returns the ids actually written.
    Row: id, fingerprint, category, disposition, classified_by, rule_id, duplicate_of, expires_at, search_text,
    duplicate_key."""
    if not rows:
        return set()
    with _execute(WRITE_NEW, [now, *(list(column) for column in zip(*rows, strict=True))]) as cursor:
        return {row[0] for row in cursor.fetchall()}


def write_outcomes(rows: Sequence[tuple[Any, ...]], now: datetime) -> int:
    """Write new outcomes (id, category, disposition, classified_by, rule_id); returns the count."""
    if not rows:
        return 0
    with _execute(WRITE_OUTCOMES, [now, *(list(column) for column in zip(*rows, strict=True))]) as cursor:
        return cursor.rowcount


def upsert_groups(rows: Sequence[tuple[Any, ...]]) -> None:
    """Add to the fingerprint groups. Row: fingerprint, error_class, pattern, origin, count,
    first_seen, last_seen, dlq ids as a '{1,2}' array literal, sample letter id."""
    if rows:
        with _execute(UPSERT_GROUPS, [list(column) for column in zip(*rows, strict=True)]):
            pass
