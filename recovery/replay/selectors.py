"""Reads about replay plans: the content hash approvals are bound to (invariant 7), which
approvals still count, and which preconditions block a start."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from recovery.models import ApprovalDecision, Broker, PlanApproval, ReplayPlan
from recovery.replay.preconditions import evaluate_preconditions

HASHED_FIELDS = (
    "selection", "name", "reason", "target_broker", "target_address", "target_routing_key", "include_held",
    "rate_per_second", "batch_size", "workers", "canary_count", "canary_window_seconds", "ramp_steps",
    "ramp_interval_seconds", "preconditions", "stop_conditions", "verifications", "required_approvals",
)  # fmt: skip


def plan_content_hash(plan: ReplayPlan) -> str:
    """SHA-256 over the plan's settings and its frozen items (letter, state, target)."""
    values = {name: hashable(getattr(plan, name)) for name in HASHED_FIELDS}
    if plan.replay_again:  # only when set, so the hashes of plans from before issue 15 stay the same
        values["replay_again"] = [True, plan.replay_again_reason]
    if plan.breaker_cooldown_seconds:  # issue 15: hashed only when on, so older approvals stay valid
        values.update(
            breaker_cooldown_seconds=plan.breaker_cooldown_seconds, breaker_probe_size=plan.breaker_probe_size
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(md5(string_agg(letter_id::text || ':' || state || ':' || target::text, ',' "
            "ORDER BY letter_id)), '') FROM recovery_planitem WHERE plan_id = %s",
            [plan.pk],
        )
        (items,) = cursor.fetchone()
    values["items"] = items
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def hashable(value: Any) -> Any:
    return value.pk if isinstance(value, Broker) else value


def valid_approvals(plan: ReplayPlan, *, content_hash: str | None = None) -> list[PlanApproval]:
    """Approvals that still count: not voided, for the current content, not expired."""
    content_hash = content_hash or plan.content_hash
    fresh_after = timezone.now() - timedelta(seconds=settings.RECOVERY_APPROVAL_TTL)
    return list(
        plan.approvals.filter(
            decision=ApprovalDecision.APPROVE, voided_at__isnull=True, content_hash=content_hash,
            created_at__gte=fresh_after,
        ).select_related("approver")
    )  # fmt: skip


def failing_preconditions(plan: ReplayPlan, *, stage: str, only: Iterable[str] | None = None) -> list[Any]:
    """Preconditions that fail and are not overridden for the plan's current content (``only``:
    just the checks of these names are evaluated)."""
    overridden = set(plan.overrides.filter(content_hash=plan.content_hash).values_list("check_name", flat=True))
    return [r for r in evaluate_preconditions(plan, stage=stage, only=only) if not r.ok and r.name not in overridden]
