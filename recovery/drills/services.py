"""Drill writes: define, change, approve, run now, schedule due runs, and approve a run's
replay plan on the strength of the drill's standing approval. Each checks the actor's
capability itself and writes one audit event in the same transaction (invariant 8).

Four eyes (invariant 7): a drill is approved by an approver who neither wrote nor changed it;
the approval stores the drill's content hash and any change voids it; an unapproved drill does
not run. Each run's replay plan is authored by the drill's author through the replay services
and approved by ``drill_plan_approve``, which records a PlanApproval in the name of the drill's
approver, referencing the standing approval, only for a plan that matches the approved template.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.drills import validation
from recovery.drills.errors import DrillBusy, DrillFourEyes, DrillInvalid, DrillNotApproved
from recovery.drills.selectors import drill_active_run, drill_approval_problem, drill_approve_refusal
from recovery.errors import InvalidInput, NotPermitted
from recovery.jobs.queue import enqueue
from recovery.models import (
    DRILL_RUN_ACTIVE,
    ApprovalDecision,
    AuditAction,
    Drill,
    DrillApproval,
    DrillOutcome,
    DrillRun,
    DrillTrigger,
    JobState,
    PlanApproval,
    PlanState,
    ReplayPlan,
)
from recovery.permissions import Capability, ensure_can

QUEUE_FIELDS = ("broker", "work_queue", "dead_letter_queue", "allow_non_drill_queue", "non_drill_queue_reason")
TEMPLATE_FIELDS = ("rate_per_second", "batch_size", "workers", "verifications", "stop_conditions")


def _snapshot(values: dict[str, Any]) -> dict[str, Any]:
    return {name: validation._hashable(value) for name, value in values.items()}


def _ensure_unique(values: dict[str, Any], drill: Drill | None = None) -> None:
    """One drill per name and per queue: two drills on one queue would consume each other's messages."""
    others = Drill.objects.exclude(pk=drill.pk if drill else None)
    if others.filter(name=values["name"]).exists():
        raise DrillInvalid("name", f"a drill named {values['name']!r} exists already")
    names = (values["work_queue"], values["dead_letter_queue"])
    clash = others.filter(Q(work_queue__in=names) | Q(dead_letter_queue__in=names), broker=values["broker"]).first()
    if clash is not None:
        raise DrillInvalid("work_queue", f"drill {clash.name!r} uses these queues on {values['broker'].name} already")


def _user(actor: Any, what: str) -> None:
    if isinstance(actor, str):
        raise NotPermitted(f"{what} needs a signed-in user, not {actor!r} (four eyes is about people)")


def drill_create(*, actor: Any, data: dict[str, Any]) -> Drill:
    """Define a drill (fields and defaults: recovery.drills.validation.DEFAULTS). Refused with a
    DrillInvalid naming the field: a bad cron expression, a scenario without messages, a queue
    that is not a drill queue without an admin's explicit choice and reason."""
    ensure_can(actor, Capability.PLAN)
    _user(actor, "defining a drill")
    values = validation.clean(data)
    validation.check_queue_choice(values, actor)
    with transaction.atomic():
        _ensure_unique(values)
        drill = Drill(**values, author=actor, content_hash=validation.content_hash(values))
        drill.non_drill_queue_admin = actor if values["allow_non_drill_queue"] else None
        drill.next_run_at = validation.next_run_at(drill.schedule, timezone.now()) if drill.enabled else None
        drill.save()
        audit_record(
            actor=actor, action=AuditAction.DRILL_CREATED, obj=drill,
            summary=f"drill {drill.name!r} defined on {drill.broker.name}: {drill.work_queue} -> "
            f"{drill.dead_letter_queue}, {drill.schedule}"[:500],
            after={**_snapshot(values), "content_hash": drill.content_hash}, reason=drill.non_drill_queue_reason,
        )  # fmt: skip
    return drill


def drill_update(*, actor: Any, drill: Drill, changes: dict[str, Any]) -> Drill:
    """Change a drill. Any change but the on/off switch voids its approval (invariant 7);
    refused while a run is active. Only an admin may move it onto a non-drill queue."""
    ensure_can(actor, Capability.PLAN)
    with transaction.atomic():
        drill = Drill.objects.select_for_update().get(pk=drill.pk)
        before = validation.current_values(drill)
        values = validation.clean({**before, **changes})
        changed = [name for name in values if validation._hashable(values[name]) != validation._hashable(before[name])]
        if not changed:
            raise InvalidInput("nothing changed")
        active = drill_active_run(drill)
        if active is not None and changed != ["enabled"]:
            raise DrillBusy(f"run {active.pk} of drill {drill.name!r} is still active: change it when the run ends")
        if set(changed) & set(QUEUE_FIELDS):
            validation.check_queue_choice(values, actor)
            drill.dlq, drill.work_address = None, ""  # provisioned again on the next run
            drill.non_drill_queue_admin = actor if values["allow_non_drill_queue"] else None
        _ensure_unique(values, drill)
        for name in changed:
            setattr(drill, name, values[name])
        voided = 0
        new_hash = validation.content_hash(values)
        if new_hash != drill.content_hash:
            voided = drill.approvals.filter(voided_at__isnull=True).update(voided_at=timezone.now())
            drill.content_hash = new_hash
        if {"schedule", "enabled"} & set(changed):
            drill.next_run_at = validation.next_run_at(drill.schedule, timezone.now()) if drill.enabled else None
        drill.save()
        audit_record(
            actor=actor, action=AuditAction.DRILL_UPDATED, obj=drill,
            summary=(f"drill {drill.name!r} changed ({', '.join(changed)})"
                     + (f"; {voided} approval(s) voided" if voided else ""))[:500],
            before={name: validation._hashable(before[name]) for name in changed},
            after={**{name: validation._hashable(values[name]) for name in changed}, "approvals_voided": voided},
            reason=drill.non_drill_queue_reason if set(changed) & set(QUEUE_FIELDS) else "",
        )  # fmt: skip
    return drill


def drill_approve(*, actor: Any, drill: Drill, comment: str = "") -> DrillApproval:
    """An approver's standing approval of the drill's current content, its replay plan template
    included (invariant 7): never by whoever wrote or changed the drill."""
    ensure_can(actor, Capability.APPROVE)
    _user(actor, "approving a drill")
    with transaction.atomic():
        drill = Drill.objects.select_for_update().get(pk=drill.pk)
        error, message = drill_approve_refusal(drill, actor)
        if error is not None:
            raise error(message)
        current = validation.content_hash(drill)
        valid = drill.approvals.filter(voided_at__isnull=True, content_hash=current)
        valid.update(voided_at=timezone.now())  # one standing approval at a time: the latest
        approval = DrillApproval.objects.create(
            drill=drill, approver=actor, content_hash=current, comment=comment.strip()
        )
        audit_record(
            actor=actor, action=AuditAction.DRILL_APPROVED, obj=drill,
            summary=f"drill {drill.name!r} approved (replay {drill.rate_per_second}/s, batch {drill.batch_size}, "
            f"{drill.workers} worker(s))",
            after={"content_hash": current, "approval": approval.pk}, reason=comment.strip(),
        )  # fmt: skip
    return approval


def _new_run(drill: Drill, *, trigger: str, slot: datetime | None = None, user: Any = None) -> DrillRun:
    return DrillRun.objects.create(
        drill=drill, trigger=trigger, slot=slot, requested_by=user, drill_hash=drill.content_hash
    )


def drill_run_now(*, actor: Any, drill: Drill) -> DrillRun:
    """'Run now': a manual run, created before its job is enqueued. Refused when the drill is
    not approved (DrillNotApproved says why) or a run of it is active (DrillBusy)."""

    ensure_can(actor, Capability.RUN)
    with transaction.atomic():
        drill = Drill.objects.select_for_update().get(pk=drill.pk)
        approval, problem = drill_approval_problem(drill)
        if approval is None:
            raise DrillNotApproved(f"drill {drill.name!r} cannot run: {problem}")
        active = drill_active_run(drill)
        if active is not None:
            raise DrillBusy(f"run {active.pk} of drill {drill.name!r} is still {active.status_display.lower()}")
        run = _new_run(drill, trigger=DrillTrigger.MANUAL, user=None if isinstance(actor, str) else actor)
        run.approval = approval
        run.save(update_fields=["approval"])
        enqueue("drill_run", run.pk)
        audit_record(actor=actor, action=AuditAction.DRILL_RUN_REQUESTED, obj=run,
                     summary=f"run {run.pk} of drill {drill.name!r} requested", after={"drill": drill.pk})  # fmt: skip
    return run


def _schedule_one(drill: Drill, now: datetime) -> DrillRun | None:
    """Claim the drill's due slot (conditional UPDATE of next_run_at, then the unique (drill, slot)
    row): two schedulers never both get it. Returns the run, queued or skipped, or None."""
    slot = drill.next_run_at
    claimed = Drill.objects.filter(pk=drill.pk, next_run_at=slot).update(
        next_run_at=validation.next_run_at(drill.schedule, now)
    )
    if not claimed:
        return None
    try:
        with transaction.atomic():
            run = _new_run(drill, trigger=DrillTrigger.SCHEDULE, slot=slot)
    except IntegrityError:
        return None  # another scheduler created this slot's run
    approval, problem = drill_approval_problem(drill)
    active = drill.runs.filter(state__in=DRILL_RUN_ACTIVE).exclude(pk=run.pk).first()
    if approval is None or active is not None:
        from recovery.drills.outcome import drill_run_close

        reason = f"not run: {problem}" if approval is None else f"not run: run {active.pk} is still active"
        drill_run_close(run, outcome=DrillOutcome.SKIPPED, reason=reason, audit=False)
    else:
        run.approval = approval
        run.save(update_fields=["approval"])
    return run


def drill_schedule_due(*, now: datetime | None = None) -> list[DrillRun]:
    """Scheduler tick: one run for every enabled drill whose slot is due; an unapproved drill or
    one whose previous run is still active gets a skipped run saying why. Queued runs are
    enqueued on commit; one audit event lists what was scheduled."""

    now = now or timezone.now()
    created: list[DrillRun] = []
    with transaction.atomic():
        due = Drill.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")
        for drill in due.select_for_update(skip_locked=True):
            run = _schedule_one(drill, now)
            if run is None:
                continue
            created.append(run)
            if run.state == JobState.QUEUED:
                enqueue("drill_run", run.pk)
        if created:
            audit_record(
                actor="scheduler", action=AuditAction.DRILL_RUNS_SCHEDULED,
                summary=f"drill runs scheduled: {', '.join(f'{r.drill.name} ({r.status})' for r in created)}"[:500],
                after={"runs": [{"run": r.pk, "drill": r.drill.name, "state": r.status, "reason": r.reason[:300]}
                                for r in created]},
            )  # fmt: skip
    return created


def _plan_matches_template(plan: ReplayPlan, drill: Drill, run: DrillRun) -> list[str]:
    """What differs between the plan and the drill's approved template (empty: nothing)."""
    problems = [name for name in TEMPLATE_FIELDS if getattr(plan, name) != getattr(drill, name)]
    if plan.include_held or plan.required_approvals != 1 or plan.target_broker_id != drill.broker_id:
        problems.append("target or held letters")
    if plan.canary_count or plan.ramp_steps:
        problems.append("canary or ramp")
    letters = set(plan.items.values_list("letter_id", flat=True))
    if not letters or not letters <= set(run.observations.get("letters", {}).values()):
        problems.append("letters that are not this run's")
    return problems


def drill_plan_approve(*, drill_run: DrillRun, plan: ReplayPlan) -> PlanApproval:
    """Approve a drill run's submitted replay plan on the strength of the drill's standing
    approval: a PlanApproval in the drill approver's name referencing that approval (invariant 7).
    Refused unless the plan is the drill's own (its author, its template, this run's letters),
    the approval still counts for the drill version the run started with, and its approver is not
    the plan's author. The audit event names the system actor 'drill' and the approver."""
    from recovery.replay.selectors import plan_content_hash

    with transaction.atomic():
        plan = ReplayPlan.objects.select_for_update().get(pk=plan.pk)
        run = DrillRun.objects.select_related("drill").get(pk=drill_run.pk)
        drill = run.drill
        approval, problem = drill_approval_problem(drill)
        if approval is None or approval.content_hash != run.drill_hash:
            raise DrillNotApproved(f"drill {drill.name!r}: {problem or 'it changed since this run started'}")
        if plan.author_id != drill.author_id or approval.approver_id == plan.author_id:
            raise DrillFourEyes("a drill's standing approval covers only plans its author drafted, approved by another")
        if plan.state != PlanState.SUBMITTED or plan_content_hash(plan) != plan.content_hash:
            raise InvalidInput(f"plan {plan.pk} is not submitted with its current content")
        problems = _plan_matches_template(plan, drill, run)
        if problems:
            raise InvalidInput(f"plan {plan.pk} differs from the drill's approved template: {', '.join(problems)}")
        plan_approval = PlanApproval.objects.create(
            plan=plan, approver=approval.approver, decision=ApprovalDecision.APPROVE, content_hash=plan.content_hash,
            comment=f"standing approval #{approval.pk} of drill {drill.name} (run {run.pk})",
        )  # fmt: skip
        plan.state = PlanState.APPROVED
        plan.save(update_fields=["state", "updated_at"])
        audit_record(
            actor="drill", action=AuditAction.DRILL_PLAN_APPROVED, obj=plan,
            summary=f"plan {plan.name!r} approved for drill run {run.pk} by the standing approval of "
            f"{approval.approver.get_username()}"[:500],
            after={"drill": drill.pk, "drill_run": run.pk, "drill_approval": approval.pk,
                   "approver": approval.approver.get_username(), "content_hash": plan.content_hash},
        )  # fmt: skip
    return plan_approval
