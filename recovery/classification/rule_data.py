"""A rule's fields as the services take them: validated (conditions by
recovery.classification.rules, DLQ and runbook ids against the database) and snapshotted for
the audit trail's before/after."""

from __future__ import annotations

from typing import Any

from recovery.classification.rules import validate_conditions
from recovery.errors import InvalidInput
from recovery.models import Category, ClassificationRule, DeadLetterQueue, Disposition, Runbook


def snapshot(rule: ClassificationRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "position": rule.position,
        "enabled": rule.enabled,
        "conditions": rule.conditions,
        "category": rule.category,
        "disposition": rule.disposition,
        "runbook": rule.runbook_id,
        "description": rule.description,
    }


def clean(data: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The rule's fields after applying ``data`` (missing keys keep their current value)."""
    merged = {**current, **{k: v for k, v in data.items() if k in current}}
    name = str(merged["name"] or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("a rule needs a name of 1 to 200 characters")
    if merged["category"] not in Category.values:
        raise InvalidInput(f"unknown category {merged['category']!r} (one of {', '.join(Category.values)})")
    if merged["disposition"] not in Disposition.values:
        raise InvalidInput(f"unknown disposition {merged['disposition']!r} (one of {', '.join(Disposition.values)})")
    conditions = validate_conditions(merged["conditions"])
    for index, condition in enumerate(conditions, start=1):
        if condition["field"] == "dlq":
            missing = set(condition["value"]) - set(
                DeadLetterQueue.objects.filter(pk__in=condition["value"]).values_list("pk", flat=True)
            )
            if missing:
                raise InvalidInput(f"condition {index} (dlq): no dead-letter queue with id {sorted(missing)[0]}")
    runbook = merged["runbook"]
    if isinstance(runbook, Runbook):
        runbook = runbook.pk
    if runbook not in (None, "") and not Runbook.objects.filter(pk=runbook).exists():
        raise InvalidInput(f"no runbook with id {runbook}")
    return {
        "name": name,
        "description": str(merged["description"] or ""),
        "enabled": bool(merged["enabled"]),
        "conditions": conditions,
        "category": merged["category"],
        "disposition": merged["disposition"],
        "runbook": int(runbook) if runbook not in (None, "") else None,
    }


NEW_RULE = {"name": "", "description": "", "enabled": True, "conditions": [], "category": "", "disposition": "",
             "runbook": None}  # fmt: skip


def apply(rule: ClassificationRule, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(rule, "runbook_id" if key == "runbook" else key, value)
