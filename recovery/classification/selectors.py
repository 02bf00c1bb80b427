"""Classification reads: the rule list, the compiled matcher, re-classification progress, and
the rule preview ("how many letters would this match?") that answers in about a second on
millions of letters by looking honestly at the latest ``PREVIEW_WINDOW`` only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from recovery.classification import store
from recovery.classification.rules import (
    Matcher,
    compile_conditions,
    conditions_hold,
    needs_body,
    validate_conditions,
)
from recovery.models import ClassificationRule, DeadLetter, TriageJob, TriageJobKind

PREVIEW_WINDOW = 50_000
PREVIEW_SAMPLE = 10
SHADOW_CHECKED = 5_000  # matches checked against the earlier rules (the newest ones)

_matcher_cache: dict[tuple[Any, ...], Matcher] = {}


def rule_list() -> QuerySet[ClassificationRule]:
    return ClassificationRule.objects.select_related("runbook").order_by("position", "id")


def rules_matcher() -> Matcher:
    """The enabled rules, compiled; recompiled only when a rule changed (one small query)."""
    rules = list(
        ClassificationRule.objects.filter(enabled=True)
        .order_by("position", "id")
        .only("id", "name", "conditions", "category", "disposition", "position", "updated_at")
    )
    key = tuple((r.pk, r.position, r.updated_at) for r in rules)
    matcher = _matcher_cache.get(key)
    if matcher is None:
        matcher = Matcher(rules)
        _matcher_cache.clear()
        _matcher_cache[key] = matcher
    return matcher


def latest_reclassify_job() -> TriageJob | None:
    return TriageJob.objects.filter(kind=TriageJobKind.RECLASSIFY).order_by("-pk").first()


def rule_order_moved(*, rule: ClassificationRule, offset: int) -> list[int]:
    """Every rule's id in order, with ``rule`` moved by ``offset`` places (-1 up, +1 down)."""
    ids = list(ClassificationRule.objects.order_by("position", "id").values_list("pk", flat=True))
    index = ids.index(rule.pk)
    target = max(0, min(len(ids) - 1, index + offset))
    ids.insert(target, ids.pop(index))
    return ids


# -- preview ----------------------------------------------------------------------------------


@dataclass
class RulePreview:
    matched: int = 0
    window: int = 0  # letters among the latest PREVIEW_WINDOW (fewer when the store holds fewer)
    complete: bool = True  # the window held every letter there is
    shadowed: int = 0  # matched letters an earlier enabled rule takes first (among the newest SHADOW_CHECKED)
    shadow_checked: int = 0
    sample: list[DeadLetter] = field(default_factory=list)
    elapsed_ms: float = 0.0


def _prefilter(conditions: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """SQL that keeps at least every letter the conditions can match (the Python matcher then
    decides): DLQ, attempt count, age, exact text, and the presence of a named header."""
    where, params = ["TRUE"], []
    now = timezone.now()
    for c in conditions:
        name, op, value = c["field"], c["op"], c.get("value")
        if name == "dlq":
            where.append("d.dlq_id = ANY(%s)")
            params.append(list(value))
        elif name == "attempt_count":
            where.append(f"d.attempt_count {'>=' if op == 'gte' else '<='} %s")
            params.append(value)
        elif name == "age":
            column = "d.first_failed_at" if c["since"] == "first_failed_at" else "d.captured_at"
            where.append(f"{column} {'<' if op == 'older_than' else '>'} %s")
            params.append(now - timedelta(seconds=value))
        elif name in ("origin", "reason", "error_class", "error_message", "content_type") and op == "eq":
            where.append(f"d.{name} = %s")
            params.append(value)
        elif name == "header" and c["name"].isascii():
            where.append(
                "(d.headers ? %s OR d.properties ? %s OR EXISTS (SELECT 1 FROM jsonb_object_keys("
                "CASE WHEN jsonb_typeof(d.headers) = 'object' THEN d.headers ELSE '{}' END || "
                "CASE WHEN jsonb_typeof(d.properties) = 'object' THEN d.properties ELSE '{}' END) AS k "
                "WHERE lower(k) = lower(%s)))"
            )
            params += [c["name"]] * 3
    return " AND ".join(where), params


def rule_preview(
    *, conditions: Any, rule: ClassificationRule | None = None, window: int = PREVIEW_WINDOW
) -> RulePreview:
    """How many of the latest ``window`` letters the (unsaved) conditions match, a sample of
    the newest matches, and how many of them an earlier enabled rule would take first (the
    rules before ``rule``; all enabled rules for a new one). InvalidInput for bad conditions.

    An SQL prefilter narrows the window, then the same Python matcher as classification decides,
    so the preview never disagrees with what a save would do."""
    started = time.monotonic()
    conditions = validate_conditions(conditions)
    predicates = compile_conditions(conditions)
    where, params = _prefilter(conditions)
    uses_headers = any(c["field"] == "header" for c in conditions)
    size, candidates = store.recent_letters(
        window=window, where=where, params=params, full_body=needs_body(conditions), headers=uses_headers
    )
    now = timezone.now()
    matched = [facts.id for facts in candidates if conditions_hold(predicates, facts, now)]
    earlier = ClassificationRule.objects.filter(enabled=True).order_by("position", "id")
    if rule is not None and rule.pk:
        earlier = earlier.filter(position__lt=rule.position).exclude(pk=rule.pk)
    earlier_matcher = Matcher(earlier)
    shadowed = 0
    if matched and earlier_matcher.rules:
        for facts in store.letters_by_id(
            matched[:SHADOW_CHECKED], full_body=earlier_matcher.needs_body, headers=earlier_matcher.needs_headers
        ):
            shadowed += earlier_matcher.classify(facts, now).rule_id is not None
    sample = list(
        DeadLetter.objects.filter(pk__in=matched[:PREVIEW_SAMPLE])
        .select_related("dlq")
        .defer("body", "stack_trace", "headers", "properties", "search_text")
        .order_by("-captured_at", "-id")
    )
    return RulePreview(
        matched=len(matched),
        window=size,
        complete=size < window,
        shadowed=shadowed,
        shadow_checked=min(len(matched), SHADOW_CHECKED),
        sample=sample,
        elapsed_ms=(time.monotonic() - started) * 1000,
    )
