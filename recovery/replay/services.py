"""Replay plan lifecycle and run controls (issue 6). Every function checks the actor's
capability itself (a direct POST cannot bypass it) and writes one audit event in the same
transaction as its change (invariant 8).

Four eyes (invariant 7): a plan is approved by users holding the approver role who are not its
author; each approval stores the plan's content hash (its settings and its frozen items); any
change voids the approvals and returns the plan to draft; a run starts only while enough
approvals match the current hash and are younger than RECOVERY_APPROVAL_TTL.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from recovery.audit.context import current_trace_id
from recovery.audit.services import audit_record
from recovery.errors import InvalidInput, NotPermitted
from recovery.letters import lifecycle
from recovery.models import (
    RUN_ACTIVE,
    ApprovalDecision,
    AuditAction,
    Broker,
    PlanApproval,
    PlanItem,
    PlanItemState,
    PlanState,
    PreconditionOverride,
    ReplayPlan,
    ReplayRun,
    RunEvent,
    RunState,
)
from recovery.observability.replay import replay_run_started
from recovery.permissions import Capability, ensure_can
from recovery.replay import freeze, ordering
from recovery.replay.breaker import validate_breaker
from recovery.replay.engine import enqueue_workers
from recovery.replay.evidence import record_baseline
from recovery.replay.limits import validate_rate_plan
from recovery.replay.selectors import failing_preconditions, hashable, plan_content_hash, valid_approvals
from recovery.replay.waiting import plans_shaped_by

EDITABLE_FIELDS = (
    "name", "reason", "target_broker", "target_address", "target_routing_key", "include_held", "rate_per_second",
    "batch_size", "workers", "canary_count", "canary_window_seconds", "ramp_steps", "ramp_interval_seconds",
    "preconditions", "stop_conditions", "verifications", "required_approvals", "replay_again", "replay_again_reason",
    "breaker_cooldown_seconds", "breaker_probe_size",
)  # fmt: skip
MIN_REASON = 10


# -- editing -----------------------------------------------------------------------------------


def _active_run(plan: ReplayPlan) -> ReplayRun | None:
    return plan.runs.filter(state__in=RUN_ACTIVE).first()


def _clean(plan: ReplayPlan, changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"these plan fields cannot be changed: {', '.join(sorted(unknown))}")
    cleaned = dict(changes)
    if "name" in cleaned:
        cleaned["name"] = str(cleaned["name"]).strip()
        if not cleaned["name"] or len(cleaned["name"]) > 200:
            raise InvalidInput("a plan needs a name of at most 200 characters")
    if "replay_again_reason" in cleaned:
        cleaned["replay_again_reason"] = str(cleaned["replay_again_reason"] or "").strip()
    merged = {name: cleaned.get(name, getattr(plan, name)) for name in EDITABLE_FIELDS}
    if merged["replay_again"] and len(merged["replay_again_reason"]) < MIN_REASON:
        # identity across plans (invariant 12): replaying letters again is an explicit, written choice
        raise InvalidInput(f"say why these letters are replayed again (at least {MIN_REASON} characters)")
    validate_rate_plan(merged)
    validate_breaker(merged)
    from recovery.replay.checks import validate_config

    for kind in ("preconditions", "stop_conditions", "verifications"):
        validate_config(kind, merged[kind])
    return cleaned


def plan_update(*, actor: Any, plan: ReplayPlan, changes: dict[str, Any]) -> ReplayPlan:
    """Change a plan. A submitted, approved or rejected plan returns to draft: its items are
    thawed and its approvals voided (invariant 7). Refused while a run of it is active."""
    ensure_can(actor, Capability.PLAN)
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        if _active_run(plan) or plan.state in (PlanState.RUNNING, PlanState.FINISHED, PlanState.CANCELLED):
            raise InvalidInput(f"plan {plan.pk} is {plan.get_state_display().lower()}: it cannot change now")
        cleaned = _clean(plan, changes)
        before = {name: hashable(getattr(plan, name)) for name in cleaned}
        changed = {name: value for name, value in cleaned.items() if hashable(value) != before[name]}
        if not changed:
            raise InvalidInput("nothing changed")
        for name, value in changed.items():
            setattr(plan, name, value)
        voided = plan.approvals.filter(voided_at__isnull=True).update(voided_at=timezone.now())
        released = 0
        if plan.state != PlanState.DRAFT:
            released = lifecycle.letters_unplanned(plan.pk)  # before its items go
            PlanItem.objects.filter(plan=plan).delete()
            plan.state, plan.content_hash, plan.submitted_at = PlanState.DRAFT, "", None
        plan.save()
        audit_record(
            actor=actor,
            action=AuditAction.PLAN_UPDATED,
            obj=plan,
            summary=f"plan {plan.name!r} changed ({', '.join(changed)})"
            + (f"; {voided} approval(s) voided" if voided else ""),
            before={name: before[name] for name in changed},
            after={**{name: hashable(value) for name, value in changed.items()}, "approvals_voided": voided,
                   **({"letters_released": released} if released else {})},
        )  # fmt: skip
    return plan


# -- submit, approve, reject -------------------------------------------------------------------


def plan_submit(*, actor: Any, plan: ReplayPlan) -> ReplayPlan:
    """Freeze the selection into items (later letters never join), hash the plan and ask for
    approval. Refuses a plan that would replay nothing."""
    ensure_can(actor, Capability.PLAN)
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != PlanState.DRAFT:
            raise InvalidInput(f"only a draft can be submitted (this plan is {plan.get_state_display().lower()})")
        _clean(plan, {})
        counts = freeze.freeze(plan)
        if not counts.included:
            reasons = "; ".join(f"{n} {why}" for why, n in counts.exclusions.most_common(3)) or "the selection is empty"
            raise InvalidInput(f"nothing to replay: {reasons}")
        moved = lifecycle.letters_planned(plan)  # the letters are "in a plan" now
        kinds = set(
            Broker.objects.filter(
                pk__in={t["broker"] for t in PlanItem.objects.filter(plan=plan).values_list("target", flat=True) if t}
            ).values_list("kind", flat=True)
        )
        validate_rate_plan({name: getattr(plan, name) for name in EDITABLE_FIELDS}, target_kinds=kinds)
        plan.state, plan.submitted_at = PlanState.SUBMITTED, timezone.now()
        plan.content_hash = plan_content_hash(plan)
        plan.save()
        audit_record(
            actor=actor,
            action=AuditAction.PLAN_SUBMITTED,
            obj=plan,
            summary=f"plan {plan.name!r} submitted: {counts.included} to replay, {counts.excluded} excluded",
            after={
                "included": counts.included,
                "excluded": counts.excluded,
                "exclusions": dict(counts.exclusions),
                "content_hash": plan.content_hash,
                "preconditions": _precondition_summary(plan, "submit"),
                **moved,
                **({"replay_again_reason": plan.replay_again_reason} if plan.replay_again else {}),
            },
        )
    return plan


def _ensure_other_approver(actor: Any, plan: ReplayPlan) -> None:
    """Four eyes (invariant 7): whoever drafted, changed or submitted the plan may not approve
    or reject it. The audit trail says who shaped it (it cannot be rewritten)."""
    ensure_can(actor, Capability.APPROVE)
    if isinstance(actor, str) or actor.pk == plan.author_id:
        raise NotPermitted("the author of a plan cannot approve or reject it (four eyes)")
    if plans_shaped_by(actor, [plan.pk]):
        raise NotPermitted("you changed or submitted this plan: someone else must approve or reject it (four eyes)")


def _precondition_summary(plan: ReplayPlan, stage: str) -> dict[str, Any]:
    """Preconditions evaluated at submit and approval: recorded with the event, not blocking
    (a failing one blocks the start, where an admin may override it)."""
    from recovery.replay.preconditions import evaluate_preconditions

    return {r.name: {"ok": r.ok, "reason": r.reason[:300]} for r in evaluate_preconditions(plan, stage=stage)}


def plan_approve(*, actor: Any, plan: ReplayPlan, comment: str = "") -> ReplayPlan:
    """One approval of the plan's current content; enough approvals make it approved."""
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        _ensure_other_approver(actor, plan)
        if plan.state not in (PlanState.SUBMITTED, PlanState.APPROVED):
            raise InvalidInput(f"only a submitted plan can be approved (this plan is {plan.state})")
        current = plan_content_hash(plan)
        if current != plan.content_hash:
            raise InvalidInput("the plan changed since it was submitted: it must be submitted again")
        if any(a.approver_id == actor.pk for a in valid_approvals(plan)):
            raise InvalidInput("you have already approved this version of the plan")
        PlanApproval.objects.create(
            plan=plan, approver=actor, decision=ApprovalDecision.APPROVE, content_hash=current, comment=comment.strip()
        )
        count = len(valid_approvals(plan))
        if count >= plan.required_approvals:
            plan.state = PlanState.APPROVED
            plan.save(update_fields=["state", "updated_at"])
        audit_record(
            actor=actor,
            action=AuditAction.PLAN_APPROVED,
            obj=plan,
            summary=f"plan {plan.name!r} approved ({count} of {plan.required_approvals})",
            after={
                "content_hash": current,
                "approvals": count,
                "state": plan.state,
                "preconditions": _precondition_summary(plan, "approve"),
            },
            reason=comment.strip(),
        )
    return plan


def plan_reject(*, actor: Any, plan: ReplayPlan, comment: str) -> ReplayPlan:
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        _ensure_other_approver(actor, plan)
        if plan.state not in (PlanState.SUBMITTED, PlanState.APPROVED):
            raise InvalidInput(f"only a submitted plan can be rejected (this plan is {plan.state})")
        if len(comment.strip()) < MIN_REASON:
            raise InvalidInput(f"say why the plan is rejected (at least {MIN_REASON} characters)")
        PlanApproval.objects.create(
            plan=plan, approver=actor, decision=ApprovalDecision.REJECT, content_hash=plan.content_hash,
            comment=comment.strip(),
        )  # fmt: skip
        plan.approvals.filter(decision=ApprovalDecision.APPROVE, voided_at__isnull=True).update(
            voided_at=timezone.now()
        )
        plan.state = PlanState.REJECTED
        plan.save(update_fields=["state", "updated_at"])
        released = lifecycle.letters_unplanned(plan.pk)  # open work again
        audit_record(actor=actor, action=AuditAction.PLAN_REJECTED, obj=plan, summary=f"plan {plan.name!r} rejected",
                     reason=comment.strip(), after={"letters_released": released})  # fmt: skip
    return plan


def precondition_override(*, actor: Any, plan: ReplayPlan, check: str, reason: str) -> PreconditionOverride:
    """An admin lets the plan start although ``check`` fails, with a written reason. Bound to the
    plan's content: a change to the plan drops the override too."""
    ensure_can(actor, Capability.MANAGE)
    if len(reason.strip()) < MIN_REASON:
        raise InvalidInput(f"an override needs a reason of at least {MIN_REASON} characters")
    from recovery.replay.checks import registered_names

    if check not in registered_names("preconditions"):
        raise InvalidInput(f"unknown precondition {check!r}")
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.state not in (PlanState.SUBMITTED, PlanState.APPROVED):
            raise InvalidInput("only a submitted or approved plan's preconditions can be overridden")
        override = PreconditionOverride.objects.create(
            plan=plan, check_name=check, reason=reason.strip(), admin=actor, content_hash=plan.content_hash
        )
        audit_record(
            actor=actor,
            action=AuditAction.PRECONDITION_OVERRIDDEN,
            obj=plan,
            summary=f"precondition {check} overridden on plan {plan.name!r}",
            after={"check": check},
            reason=reason.strip(),
        )
    return override


def plan_cancel(*, actor: Any, plan: ReplayPlan, reason: str = "") -> ReplayPlan:
    ensure_can(actor, Capability.PLAN)
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        if _active_run(plan) or plan.state in (PlanState.RUNNING, PlanState.FINISHED, PlanState.CANCELLED):
            raise InvalidInput(f"plan {plan.pk} is {plan.get_state_display().lower()}: it cannot be cancelled")
        plan.state = PlanState.CANCELLED
        plan.save(update_fields=["state", "updated_at"])
        released = lifecycle.letters_unplanned(plan.pk)  # open work again
        audit_record(actor=actor, action=AuditAction.PLAN_CANCELLED, obj=plan, summary=f"plan {plan.name!r} cancelled",
                     reason=reason.strip(), after={"letters_released": released})  # fmt: skip
    return plan


# -- runs --------------------------------------------------------------------------------------


def run_start(*, actor: Any, plan: ReplayPlan) -> ReplayRun:
    """Create the run and its ledger (one row per included item) before anything is enqueued,
    then enqueue its workers on commit."""
    ensure_can(actor, Capability.RUN)
    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != PlanState.APPROVED:
            raise InvalidInput(f"only an approved plan can start (this plan is {plan.get_state_display().lower()})")
        if plan_content_hash(plan) != plan.content_hash:
            raise InvalidInput("the plan's content no longer matches what was approved: submit it again")
        approvals = valid_approvals(plan)
        if len(approvals) < plan.required_approvals:
            raise InvalidInput(
                f"the plan's approvals expired or were voided ({len(approvals)} of {plan.required_approvals} valid): "
                "ask for approval again"
            )
        if _active_run(plan):
            raise InvalidInput("a run of this plan is already active")
        failing = failing_preconditions(plan, stage="start")
        if failing:
            raise InvalidInput("preconditions fail: " + "; ".join(f"{r.name}: {r.reason}" for r in failing))
        run = ReplayRun.objects.create(
            plan=plan, state=RunState.RUNNING, started_by=None if isinstance(actor, str) else actor,
            plan_hash=plan.content_hash, started_at=timezone.now(), phase="canary" if plan.canary_count else "ramp-0",
            trace_id=current_trace_id() or secrets.token_hex(16),
            phase_started_at=timezone.now(),
        )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO recovery_ledgerentry (run_id, item_id, letter_id, state, lease_owner, fencing_token, "
                "attempts, broker_message_id, error) SELECT %s, id, letter_id, 'pending', '', 0, 0, '', '' "
                "FROM recovery_planitem WHERE plan_id = %s AND state = %s ORDER BY id",
                [run.pk, plan.pk, PlanItemState.INCLUDED],
            )
            run.total = cursor.rowcount
        ordering.hold_successors(run)  # invariant 13: a group's letters wait for the one before them
        run.save(update_fields=["total"])
        record_baseline(run)  # issue 15: target depths before anything is published
        plan.state = PlanState.RUNNING
        plan.save(update_fields=["state", "updated_at"])
        RunEvent.objects.create(run=run, kind="started", message=f"started by {_name(actor)}: {run.total} letters")
        audit_record(
            actor=actor, action=AuditAction.RUN_STARTED, obj=run,
            summary=f"run {run.pk} of plan {plan.name!r} started: {run.total} letters",
            after={"plan": plan.pk, "plan_hash": plan.content_hash,
                   "approvers": [a.approver.username for a in approvals]},
        )  # fmt: skip
        enqueue_workers(run)
        transaction.on_commit(lambda: replay_run_started(run))  # the root span of the run's trace
    return run


def _name(actor: Any) -> str:
    return actor if isinstance(actor, str) else actor.get_username()


def _control(actor: Any, run: ReplayRun, *, allowed: tuple[str, ...], state: str, control: str, action: AuditAction,
             verb: str, reason: str) -> ReplayRun:  # fmt: skip
    ensure_can(actor, Capability.RUN)
    with transaction.atomic():
        run = ReplayRun.objects.select_for_update().select_related("plan").get(pk=run.pk)
        if run.state not in allowed:
            raise InvalidInput(f"run {run.pk} is {run.get_state_display().lower()}: it cannot be {verb}")
        run.state, run.control = state, control
        if control != "pause" and (run.breaker or {}).get("state") == "open":  # issue 15: a person decided
            run.breaker = {**run.breaker, "state": "closed", "closed_by": _name(actor), "retry_at": None}
        if state == RunState.PAUSED:
            lifecycle.run_letters_replayed(run.pk)  # issue 15: what it sent reads replayed while it is paused
        if state == RunState.ABORTED:
            run.finished_at = timezone.now()
            run.stop_reason = reason.strip() or f"aborted by {_name(actor)}"
            ReplayPlan.objects.filter(pk=run.plan_id).update(state=PlanState.FINISHED)
            # issue 15: letters it never sent are open again (counted in the audit event)
            settled = lifecycle.run_letters_settled(run_id=run.pk, plan_id=run.plan_id, verified=False)
        run.save()
        RunEvent.objects.create(
            run=run, kind=verb, message=f"{verb} by {_name(actor)}" + (f": {reason}" if reason else "")
        )
        audit_record(actor=actor, action=action, obj=run, summary=f"run {run.pk} {verb}", reason=reason.strip(),
                     after=settled if state == RunState.ABORTED else None)  # fmt: skip
        if control == "run":
            run.stop_reason = ""
            run.save(update_fields=["stop_reason"])
            enqueue_workers(run)
    return run


def run_pause(*, actor: Any, run: ReplayRun, reason: str = "") -> ReplayRun:
    """Workers take no new batch once they see it (within one limiter slice, < 1 s)."""
    return _control(actor, run, allowed=(RunState.RUNNING,), state=RunState.PAUSED, control="pause",
                    action=AuditAction.RUN_PAUSED, verb="paused", reason=reason)  # fmt: skip


def run_resume(*, actor: Any, run: ReplayRun, reason: str = "") -> ReplayRun:
    return _control(actor, run, allowed=(RunState.PAUSED,), state=RunState.RUNNING, control="run",
                    action=AuditAction.RUN_RESUMED, verb="resumed", reason=reason)  # fmt: skip


def run_abort(*, actor: Any, run: ReplayRun, reason: str = "") -> ReplayRun:
    """Stop for good: pending letters are never published by this run (a new run may)."""
    return _control(actor, run, allowed=RUN_ACTIVE, state=RunState.ABORTED,
                    control="abort", action=AuditAction.RUN_ABORTED, verb="aborted", reason=reason)  # fmt: skip


# -- ordered groups (invariant 13, recovery.replay.ordering) -------------------------------------


def run_release_blocked(*, actor: Any, run: ReplayRun, group: str = "", reason: str) -> int:
    """Let an ordered group go on without the letter that holds it (failed, discarded after the
    freeze, or excluded): its waiting letters are sent in their order, the blocker is not. An
    explicit, written choice: the group's consumer sees a gap where the blocker was. ``group``
    names one group; empty releases every blocked group of the run. Returns the groups released."""
    ensure_can(actor, Capability.RUN)
    if len(reason.strip()) < MIN_REASON:
        raise InvalidInput(f"say why the group may go on without its letter (at least {MIN_REASON} characters)")
    with transaction.atomic():
        run = ReplayRun.objects.select_for_update().get(pk=run.pk)
        if run.state not in (RunState.RUNNING, RunState.PAUSED):
            raise InvalidInput(f"run {run.pk} is {run.get_state_display().lower()}: nothing of it can be released")
        blocked = ordering.blocked_groups(run, group=group or None)
        if not blocked:
            raise InvalidInput("no ordered group of this run is blocked" + (" under that name" if group else ""))
        released = ordering.release(run, blocked)
        waiting = sum(g.waiting for g in blocked)
        blockers = ", ".join(f"letter {g.blocker_letter_id}" for g in blocked[:10]) + (
            " and more" if blocked[10:] else ""
        )
        summary = (
            f"run {run.pk}: {len(blocked)} ordered group(s) released, {waiting} letter(s) go on without {blockers}"
        )
        message = f"{summary} ({_name(actor)}: {reason.strip()})"
        RunEvent.objects.create(run=run, kind="order-released", message=message[:1000],
                                data={"groups": [g.group for g in blocked]})  # fmt: skip
        audit_record(actor=actor, action=AuditAction.RUN_ORDER_RELEASED, obj=run, summary=summary[:500],
                     after={"released": [g.as_dict() for g in blocked[:100]], "rows": released},
                     reason=reason.strip())  # fmt: skip
    return len(blocked)
