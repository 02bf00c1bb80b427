"""Re-evaluating old duplicate marks (migration 0017, issue 15 part 6).

Before 0017 a letter was marked a duplicate of the first letter with the same origin and body, and
set to discard: identical bodies with different Kafka keys or offsets, or different message ids,
were filed away as duplicates (29 of 30 legitimate records in one test). This pass:

1. gives every classified letter its duplicate key (recovery.classification.duplicates);
2. keeps a letter as a duplicate only when an earlier letter has its key (the same message
   delivered twice), now held instead of discarded;
3. returns every other marked letter to open: no duplicate mark, and the outcome the enabled
   rules give it (what it would have got had it not been marked);
4. writes one audit event saying what changed (invariant 8), through ``audit_append`` so that it
   works on the migration's historical models.

Works with any model classes shaped like the live ones (the migration passes historical ones).
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.utils import timezone

from recovery.classification import store
from recovery.classification.duplicates import duplicate_key
from recovery.classification.rules import Matcher

CHUNK = 2000
MAX_LISTED = 1000  # letter ids named in the audit event (the counts are complete)

_UNKEYED = (
    "SELECT d.id, b.kind, d.identity, d.origin, d.headers, d.properties, d.content_hash, d.source_message_id "
    "FROM recovery_deadletter d JOIN recovery_deadletterqueue q ON q.id = d.dlq_id "
    "JOIN recovery_broker b ON b.id = q.broker_id "
    "WHERE d.id > %s AND d.classified_by <> '' AND d.duplicate_key = '' ORDER BY d.id LIMIT %s"
)
_SET_KEYS = (
    "UPDATE recovery_deadletter AS d SET duplicate_key = v.key FROM unnest(%s::bigint[], %s::text[]) AS v(id, key) "
    "WHERE d.id = v.id"
)
_MARKED = (
    "SELECT id, duplicate_key, duplicate_of_id, category, disposition, classified_by FROM recovery_deadletter "
    "WHERE classified_by = 'duplicate' OR duplicate_of_id IS NOT NULL ORDER BY id"
)
_KEEP = (
    "UPDATE recovery_deadletter AS d SET duplicate_of_id = v.first, disposition = v.disposition "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, first, disposition) WHERE d.id = v.id"
)
_RETURN = (
    "UPDATE recovery_deadletter AS d SET duplicate_of_id = NULL, category = v.category, disposition = v.disposition, "
    "classified_by = v.classified_by, rule_id = v.rule_id, classified_at = %s "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[]) "
    "AS v(id, category, disposition, classified_by, rule_id) WHERE d.id = v.id"
)
_UNLINK = "UPDATE recovery_deadletter SET duplicate_of_id = NULL WHERE id = ANY(%s::bigint[])"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def backfill_keys() -> int:
    """Give every classified letter without one its duplicate key; returns how many got one."""
    after, keyed = 0, 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_UNKEYED, [after, CHUNK])
            rows = cursor.fetchall()
        if not rows:
            return keyed
        after = rows[-1][0]
        ids, keys = [], []
        for letter_id, kind, identity, origin, headers, properties, content_hash, source_message_id in rows:
            key = duplicate_key(
                kind=kind, identity=identity, origin=origin, headers=_json(headers), properties=_json(properties),
                content_hash=content_hash, source_message_id=source_message_id or "",
            )  # fmt: skip
            if key:
                ids.append(letter_id)
                keys.append(key)
        if ids:
            with connection.cursor() as cursor:
                cursor.execute(_SET_KEYS, [ids, keys])
            keyed += len(ids)


def duplicates_reevaluate(*, rule_model: Any, event_model: Any, actor_name: str = "system:migration") -> dict[str, Any]:
    """Steps 1-4 of the module docstring, inside the caller's transaction. Returns what changed."""
    from recovery.audit.migration import audit_append

    keyed = backfill_keys()
    with connection.cursor() as cursor:
        cursor.execute(_MARKED)
        marked = cursor.fetchall()
    firsts = store.first_same_key(sorted({row[1] for row in marked if row[1]}))
    keep: list[tuple[int, int, str]] = []
    undiscarded = 0
    wrong_by_classifier: list[int] = []
    wrong_by_hand: list[int] = []
    for letter_id, key, _duplicate_of, _category, disposition, classified_by in marked:
        first = firsts.get(key) if key else None
        if first is not None and first < letter_id:
            by_default = classified_by == "duplicate" and disposition == "discard"
            undiscarded += by_default
            keep.append((letter_id, first, "hold" if by_default else disposition))
        elif classified_by == "duplicate":
            wrong_by_classifier.append(letter_id)
        else:
            wrong_by_hand.append(letter_id)  # an operator's outcome stays; only the wrong link goes
    if keep:
        with connection.cursor() as cursor:
            cursor.execute(_KEEP, [[k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep]])
    if wrong_by_hand:
        with connection.cursor() as cursor:
            cursor.execute(_UNLINK, [wrong_by_hand])
    outcomes = _reclassify(wrong_by_classifier, rule_model)
    changed = {
        "keys_backfilled": keyed,
        "marked": len(marked),
        "returned_to_open": len(wrong_by_classifier),
        "unlinked_manual": len(wrong_by_hand),
        "kept_as_duplicates": len(keep),
        "no_longer_discarded": undiscarded,
    }
    if wrong_by_classifier or wrong_by_hand or changed["no_longer_discarded"]:
        audit_append(
            event_model,
            actor_name=actor_name,
            action="classify.finished",
            object_type="recovery.deadletter",
            summary=(
                f"duplicates re-evaluated (migration 0017): {len(wrong_by_classifier)} letters wrongly marked "
                f"duplicate returned to open, {len(wrong_by_hand)} wrong duplicate links removed, {len(keep)} kept "
                f"as duplicates of the same message ({changed['no_longer_discarded']} held instead of discarded)"
            ),
            before={"rule": "same origin and body is a duplicate, disposition discard"},
            after={
                **changed,
                "returned_ids": wrong_by_classifier[:MAX_LISTED],
                "outcomes": outcomes,
                "rule": "same producer message id or broker identity of the original; duplicates are held",
            },
            reason="equal bodies alone never make a duplicate (issue 15)",
        )
    return changed


def _reclassify(ids: list[int], rule_model: Any) -> dict[str, int]:
    """Give these letters the outcome the enabled rules give them; returns counts per outcome."""
    counts: dict[str, int] = {}
    if not ids:
        return counts
    matcher = Matcher(rule_model.objects.filter(enabled=True).order_by("position", "id"))
    now = timezone.now()
    for start in range(0, len(ids), CHUNK):
        facts = store.letters_by_id(ids[start : start + CHUNK], full_body=matcher.needs_body, headers=True)
        rows = []
        for letter in facts:
            outcome = matcher.classify(letter, now)
            rows.append((letter.id, outcome.category, outcome.disposition, outcome.source, outcome.rule_id))
            name = f"{outcome.category}/{outcome.disposition}"
            counts[name] = counts.get(name, 0) + 1
        with connection.cursor() as cursor:
            cursor.execute(_RETURN, [now, *(list(column) for column in zip(*rows, strict=True))])
    return counts
