"""Who is waiting for whom: plans that wait for this user's approval, and approved plans an
operator can start. Read by the overview and by the navigation's count on every page, so both
stay a few indexed queries over the (few) submitted and approved plans.

Invariant 7 (four eyes): a plan is offered for approval only to someone the service layer would
let approve it: an approver who neither drafted, changed nor submitted it, and who has not
already approved its current content. ``plans_shaped_by`` is the one reading of "who shaped a
plan", shared with recovery.replay.services, so the offer and the refusal never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from recovery.models import AuditAction, AuditEvent, PlanState, ReplayPlan
from recovery.permissions import Capability, user_can
from recovery.replay.selectors import valid_approvals

SHAPING_ACTIONS = (AuditAction.PLAN_CREATED, AuditAction.PLAN_UPDATED, AuditAction.PLAN_SUBMITTED)


def plans_shaped_by(user: Any, plan_ids: Iterable[int]) -> set[int]:
    """Ids among ``plan_ids`` that ``user`` drafted, changed or submitted, by the audit trail
    (which cannot be rewritten)."""
    ids = [str(pk) for pk in plan_ids]
    if not ids or user is None or not getattr(user, "pk", None):
        return set()
    rows = AuditEvent.objects.filter(
        object_type="recovery.replayplan", object_id__in=ids, actor_id=user.pk, action__in=SHAPING_ACTIONS
    ).values_list("object_id", flat=True)
    return {int(pk) for pk in rows}


def plans_awaiting_approval(user: Any) -> list[ReplayPlan]:
    """Submitted plans ``user`` may approve now, oldest submission first."""
    if not user_can(user, Capability.APPROVE):
        return []
    plans = list(
        ReplayPlan.objects.filter(state=PlanState.SUBMITTED)
        .exclude(author_id=user.pk)
        .select_related("author")
        .order_by("submitted_at", "pk")
    )
    shaped = plans_shaped_by(user, [p.pk for p in plans])
    waiting = []
    for plan in plans:
        if plan.pk in shaped:
            continue
        approvals = valid_approvals(plan)
        if any(a.approver_id == user.pk for a in approvals):
            continue
        plan.valid_approval_count = len(approvals)
        waiting.append(plan)
    return waiting


@dataclass(frozen=True)
class ReadyPlan:
    plan: ReplayPlan
    approvals: int
    expired: bool  # its approvals are too old to start a run (RECOVERY_APPROVAL_TTL)


def plans_ready_to_start(user: Any) -> list[ReadyPlan]:
    """Approved plans an operator (capability run) can start, oldest first; a plan whose
    approvals have expired since is listed as such, since starting it would be refused."""
    if not user_can(user, Capability.RUN):
        return []
    ready = []
    for plan in ReplayPlan.objects.filter(state=PlanState.APPROVED).select_related("author").order_by("updated_at"):
        count = len(valid_approvals(plan))
        ready.append(ReadyPlan(plan=plan, approvals=count, expired=count < plan.required_approvals))
    return ready


def waiting_count(user: Any) -> int:
    """The navigation's count: plans waiting for this user's approval plus approved plans this
    user can start (expired ones left out: nothing to do but resubmit)."""
    return len(plans_awaiting_approval(user)) + sum(not r.expired for r in plans_ready_to_start(user))
