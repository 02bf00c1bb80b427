"""Invariant 7 for drills: the drill is approved by an approver who neither wrote nor changed it;
any change voids the approval; an unapproved drill does not run; each run's plan is approved on
the strength of the standing approval only when it is the drill's own plan."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from recovery.drills.errors import DrillBusy, DrillFourEyes, DrillNotApproved
from recovery.drills.selectors import drill_approval_current, drill_approval_problem
from recovery.drills.services import (
    drill_approve,
    drill_plan_approve,
    drill_run_now,
    drill_schedule_due,
    drill_update,
)
from recovery.errors import InvalidInput, NotPermitted
from recovery.models import AuditEvent, DrillOutcome, DrillRun, DrillTrigger, JobState, PlanApproval
from recovery.permissions import Role, role_groups
from tests.factories import ReplayPlanFactory

pytestmark = pytest.mark.django_db


def test_the_author_cannot_approve_their_drill(make_drill: Any, people: Any, make_person: Any) -> None:
    author_and_approver = make_person(Role.OPERATOR, Role.APPROVER)
    drill = make_drill(actor=author_and_approver)
    with pytest.raises(DrillFourEyes, match="author of a drill cannot approve it"):
        drill_approve(actor=author_and_approver, drill=drill)
    assert drill_approval_current(drill) is None


def test_someone_who_changed_the_drill_cannot_approve_it(make_drill: Any, make_person: Any, people: Any) -> None:
    editor = make_person(Role.OPERATOR, Role.APPROVER)
    drill = make_drill()
    drill_update(actor=editor, drill=drill, changes={"message_count": 8})
    with pytest.raises(DrillFourEyes, match="you changed this drill"):
        drill_approve(actor=editor, drill=drill)


def test_an_operator_or_a_system_actor_cannot_approve(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    with pytest.raises(NotPermitted):
        drill_approve(actor=people["admin"], drill=drill)
    with pytest.raises(NotPermitted, match="signed-in user"):
        drill_approve(actor="cli:root", drill=drill)


def test_an_approver_approves_once_per_version(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    approval = drill_approve(actor=people["approver"], drill=drill, comment="looks right")
    assert drill_approval_current(drill) == approval
    with pytest.raises(InvalidInput, match="already approved"):
        drill_approve(actor=people["approver"], drill=drill)
    assert AuditEvent.objects.filter(
        action="drill.approved", object_id=str(drill.pk), actor=people["approver"]
    ).exists()


@pytest.mark.parametrize(
    "change",
    [{"schedule": "0 * * * *"}, {"rate_per_second": 20}, {"poison_count": 0}, {"alert_webhook_url": "http://h/x"}],
)
def test_any_change_voids_the_approval(make_drill: Any, people: Any, change: dict) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    drill = drill_update(actor=people["author"], drill=drill, changes=change)
    approval, problem = drill_approval_problem(drill)
    assert approval is None and "voided by a change" in problem
    event = AuditEvent.objects.filter(action="drill.updated", object_id=str(drill.pk)).get()
    assert event.after["approvals_voided"] == 1
    with pytest.raises(DrillNotApproved, match="cannot run: its approval was voided"):
        drill_run_now(actor=people["author"], drill=drill)
    assert not DrillRun.objects.exists()


def test_pausing_the_schedule_keeps_the_approval(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    drill = drill_update(actor=people["author"], drill=drill, changes={"enabled": False})
    assert drill_approval_current(drill) is not None and drill.next_run_at is None


def test_an_unapproved_drill_does_not_run_now(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    with pytest.raises(DrillNotApproved, match="has not been approved: an approver other than its author"):
        drill_run_now(actor=people["author"], drill=drill)


def test_an_unapproved_scheduled_drill_records_a_skipped_run(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill.next_run_at = timezone.now() - timedelta(seconds=1)
    drill.save()
    (run,) = drill_schedule_due()
    assert (run.trigger, run.outcome, run.state) == (DrillTrigger.SCHEDULE, DrillOutcome.SKIPPED, JobState.CANCELLED)
    assert "not run: it has not been approved" in run.reason
    drill.refresh_from_db()
    assert (drill.runs_total, drill.failures_total, drill.last_outcome) == (1, 1, "skipped")


def test_an_approver_who_lost_the_role_no_longer_counts(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    people["approver"].groups.set([role_groups()[Role.VIEWER]])
    del people["approver"]._recovery_groups
    approval, problem = drill_approval_problem(drill)
    assert approval is None and "no longer holds the approver role" in problem


def test_run_now_refuses_while_a_run_is_active(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    first = drill_run_now(actor=people["author"], drill=drill)
    with pytest.raises(DrillBusy, match=f"run {first.pk} of drill"):
        drill_run_now(actor=people["author"], drill=drill)
    with pytest.raises(DrillBusy, match="still active"):
        drill_update(actor=people["author"], drill=drill, changes={"message_count": 9})


def test_the_standing_approval_covers_only_the_drills_own_plan(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    run = drill_run_now(actor=people["author"], drill=drill)
    foreign = ReplayPlanFactory(author=people["admin"], state="submitted")
    with pytest.raises(DrillFourEyes, match="only plans its author drafted"):
        drill_plan_approve(drill_run=run, plan=foreign)
    own = ReplayPlanFactory(author=people["author"])
    with pytest.raises(InvalidInput, match="not submitted"):
        drill_plan_approve(drill_run=run, plan=own)
    assert not PlanApproval.objects.exists()


def test_a_run_of_a_drill_changed_since_it_started_gets_no_plan_approval(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    run = drill_run_now(actor=people["author"], drill=drill)
    DrillRun.objects.filter(pk=run.pk).update(drill_hash="0" * 64)  # the version it started with
    run.refresh_from_db()
    plan = ReplayPlanFactory(author=people["author"], state="submitted")
    with pytest.raises(DrillNotApproved, match="changed since this run started"):
        drill_plan_approve(drill_run=run, plan=plan)


def test_a_plan_that_differs_from_the_approved_template_is_refused(make_drill: Any, people: Any) -> None:
    from recovery.replay.selectors import plan_content_hash

    drill = make_drill(rate_per_second=50)
    drill_approve(actor=people["approver"], drill=drill)
    run = drill_run_now(actor=people["author"], drill=drill)
    plan = ReplayPlanFactory(
        author=people["author"], state="submitted", rate_per_second=5000, target_broker=drill.broker
    )
    plan.content_hash = plan_content_hash(plan)
    plan.save()
    with pytest.raises(
        InvalidInput, match="differs from the drill's approved template: rate_per_second.*not this run's"
    ):
        drill_plan_approve(drill_run=run, plan=plan)
    assert not PlanApproval.objects.exists()
