"""Building a replayable plan on a real broker: capture real dead letters, draft, submit,
approve (another user), start. Used by the engine, fault and backend tests."""

from __future__ import annotations

from typing import Any

from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import CaptureTrigger, DeadLetter, Disposition, ReplayPlan, ReplayRun
from recovery.permissions import Role
from recovery.replay import services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create


def captured_letters(harness: Any, count: int, *, prefix: str = "m") -> tuple[Any, list[DeadLetter]]:
    dlq = harness.make_dlq()
    harness.fill(dlq, [(f'{{"n": {i}, "p": "{prefix}"}}'.encode(), {"x-seq": str(i)}) for i in range(count)])
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    letters = list(DeadLetter.objects.filter(dlq=dlq).order_by("id"))
    assert len(letters) == count
    # as an operator's bulk action does: classified by hand, so classification jobs leave them alone
    DeadLetter.objects.filter(dlq=dlq).update(disposition=Disposition.REPLAY, classified_by="manual")
    return dlq, letters


def approved_plan(harness: Any, dlq: Any, target: Any, make_user: Any, **settings: Any) -> tuple[ReplayPlan, Any]:
    author = make_user(Role.OPERATOR)
    approver = make_user(Role.APPROVER)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name=f"replay {dlq.name}")
    # No stop condition and no verification unless a test asks for them (not the defaults of a new plan):
    # such a run ends "completed, not verified" as soon as it has published (issue 15).
    changes = {"target_broker": harness.broker, "target_address": target.name, "target_routing_key": target.routing_key,
               "rate_per_second": 1000, "batch_size": 10, "stop_conditions": [], "verifications": [],
               **settings}  # fmt: skip
    plan = services.plan_update(actor=author, plan=plan, changes=changes)
    plan = services.plan_submit(actor=author, plan=plan)
    plan = services.plan_approve(actor=approver, plan=plan)
    return plan, author


def start(plan: ReplayPlan, make_user: Any) -> ReplayRun:
    return services.run_start(actor=make_user(Role.OPERATOR), plan=plan)
