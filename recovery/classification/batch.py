"""One chunk of new letters through classification: fingerprint, search text, expiry, duplicate
or rule outcome, written with one UPDATE, then counted in their fingerprint groups, all in one
transaction so a group never counts a letter whose classification rolled back.

A duplicate is a later delivery of the same message (recovery.classification.duplicates), never a
letter that merely has the same body; it is held, never discarded, so nobody loses a letter to a
wrong match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from recovery.classification import store
from recovery.classification.duplicates import duplicate_key
from recovery.classification.expiry import expires_at
from recovery.classification.fingerprint import fingerprint
from recovery.classification.rules import Matcher, Outcome
from recovery.classification.subject import search_text
from recovery.letters import lifecycle
from recovery.masking import Masker
from recovery.models import Category, ClassificationSource, Disposition

DUPLICATE_OUTCOME = Outcome(Category.DUPLICATE.value, Disposition.HOLD.value, ClassificationSource.DUPLICATE.value)


@dataclass
class ClassifyResult:
    seen: int = 0
    classified: int = 0
    duplicates: int = 0
    by_rule: int = 0
    by_default: int = 0


def _dlq_literal(ids: set[int]) -> str:
    return "{" + ",".join(str(i) for i in sorted(ids)) + "}"


def _searchable(text: str, letter: store.NewLetter) -> str:
    """The search text with the DLQ's e-mail and card detectors applied: a search must not let a
    user without the unmask grant confirm a masked value (issue 5, masking)."""
    if not (letter.mask_emails or letter.mask_cards):
        return text
    return Masker(emails=letter.mask_emails, cards=letter.mask_cards).text(text).lower()


def _key(letter: store.NewLetter) -> str:
    facts = letter.facts
    return duplicate_key(
        kind=letter.kind, identity=letter.identity, origin=facts.origin, headers=facts.headers,
        properties=facts.properties, content_hash=letter.content_hash, source_message_id=letter.source_message_id,
    )  # fmt: skip


def classify_chunk(letters: list[store.NewLetter], matcher: Matcher, result: ClassifyResult) -> None:
    """Classify these unclassified letters (see ``letters_classify``) and add to ``result``."""
    now = timezone.now()
    keys = {letter.facts.id: _key(letter) for letter in letters}
    rows, details = [], {}
    with transaction.atomic():
        first = store.first_same_key(sorted({k for k in keys.values() if k}))
        for letter_id, key in sorted(keys.items()):  # the chunk's own first delivery counts too
            if key:
                first[key] = min(first.get(key, letter_id), letter_id)
        for letter in letters:
            facts = letter.facts
            print_ = fingerprint(
                error_class=facts.error_class,
                error_message=facts.error_message,
                origin=facts.origin,
                stack_trace=letter.stack_trace,
            )
            key = keys[facts.id]
            first_id = first.get(key) if key else None
            duplicate_of = first_id if first_id is not None and first_id < facts.id else None
            outcome = DUPLICATE_OUTCOME if duplicate_of else matcher.classify(facts, now)
            expiry = expires_at(
                kind=letter.kind,
                headers=facts.headers,
                properties=facts.properties,
                retention_seconds=letter.retention_seconds,
            )
            searchable = _searchable(search_text(facts), letter)
            rows.append((facts.id, print_.digest, outcome.category, outcome.disposition, outcome.source,
                         outcome.rule_id, duplicate_of, expiry, searchable, key))  # fmt: skip
            details[facts.id] = (print_, facts, outcome)
        written = store.write_new(rows, now)
        lifecycle.letters_returned(sorted(written))  # issue 15: replayed letters that came back (x-replay-id)
        groups: dict[str, list[Any]] = {}
        for letter_id in sorted(written):
            print_, facts, outcome = details[letter_id]
            group = groups.get(print_.digest)
            if group is None:
                seen = facts.captured_at
                groups[print_.digest] = [facts.error_class, print_.pattern, facts.origin, 1, seen, seen,
                                         {facts.dlq_id}, letter_id]  # fmt: skip
            else:
                group[3] += 1
                group[4], group[5] = min(group[4], facts.captured_at), max(group[5], facts.captured_at)
                group[6].add(facts.dlq_id)
            result.duplicates += outcome is DUPLICATE_OUTCOME
            result.by_rule += outcome.source == ClassificationSource.RULE
            result.by_default += outcome.source == ClassificationSource.DEFAULT
        store.upsert_groups(
            [(digest, g[0], g[1], g[2], g[3], g[4], g[5], _dlq_literal(g[6]), g[7]) for digest, g in groups.items()]
        )
    result.seen += len(letters)
    result.classified += len(written)
