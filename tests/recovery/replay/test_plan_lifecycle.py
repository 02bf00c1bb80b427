"""Plan lifecycle in the service layer: the frozen selection, the dry run, four eyes
(invariant 7) and bad input refused with a specific error and nothing changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from recovery.errors import InvalidInput, NotPermitted
from recovery.models import (
    AuditAction,
    AuditEvent,
    BrokerKind,
    Category,
    DeadLetterState,
    Disposition,
    PlanApproval,
    PlanItem,
    PlanState,
)
from recovery.permissions import Role, role_groups
from recovery.replay import freeze, selectors, services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.factories import BrokerFactory, DeadLetterFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return {"author": make_user(Role.OPERATOR), "approver": make_user(Role.APPROVER), "other": make_user(Role.APPROVER)}


def draft(dlq, author, **changes):
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="replay orders")
    return services.plan_update(actor=author, plan=plan, changes=changes) if changes else plan


def test_the_dry_run_counts_and_explains_exclusions_and_the_freeze_matches_it(dlq, people) -> None:
    DeadLetterFactory.create_batch(4, dlq=dlq, replayable=True)
    DeadLetterFactory(dlq=dlq, replayable=True, category=Category.POISON, disposition=Disposition.HOLD)
    DeadLetterFactory(dlq=dlq, replayable=True, state=DeadLetterState.DISCARDED, disposition=Disposition.DISCARD)
    # no target: the DLQ has no default either
    DeadLetterFactory(dlq=dlq, replayable=True, origin="celery:tasks.charge")
    plan = draft(dlq, people["author"])
    dry = freeze.dry_run(plan)
    assert (dry.included, dry.excluded) == (4, 3)
    assert dry.targets == {f"{dlq.broker.name}: orders": 4}
    assert set(dry.exclusions) == {"discarded", "poison (include held letters to override)", freeze.targets.NO_TARGET}
    DeadLetterFactory(dlq=dlq, replayable=True)  # arrives after the draft: never joins
    plan = services.plan_submit(actor=people["author"], plan=plan)
    assert PlanItem.objects.filter(plan=plan, state="included").count() == 4
    assert PlanItem.objects.filter(plan=plan).count() == 7
    targets = PlanItem.objects.filter(plan=plan, state="included").values_list("target", flat=True)
    assert {t["name"] for t in targets} == {"orders"} and {t["broker"] for t in targets} == {dlq.broker_id}


def test_replay_ids_are_stable_per_plan_and_letter(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    first = set(PlanItem.objects.filter(plan=plan).values_list("letter_id", "replay_id"))
    plan = services.plan_update(actor=people["author"], plan=plan, changes={"rate_per_second": 20})
    plan = services.plan_submit(actor=people["author"], plan=plan)
    assert set(PlanItem.objects.filter(plan=plan).values_list("letter_id", "replay_id")) == first


def test_the_author_cannot_approve_and_a_viewer_cannot_either(dlq, people, make_user) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    with pytest.raises(NotPermitted, match="four eyes|approve"):
        services.plan_approve(actor=people["author"], plan=plan)
    author_also_approver = people["author"]
    author_also_approver.groups.add(role_groups()[Role.APPROVER])
    del author_also_approver._recovery_groups  # the cached group names of this user object
    with pytest.raises(NotPermitted, match="four eyes"):
        services.plan_approve(actor=author_also_approver, plan=plan)
    with pytest.raises(NotPermitted):
        services.plan_approve(actor=make_user(Role.VIEWER), plan=plan)
    assert not PlanApproval.objects.exists()
    plan = services.plan_approve(actor=people["approver"], plan=plan, comment="looks right")
    assert plan.state == PlanState.APPROVED


def test_a_change_after_approval_voids_it(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    plan = services.plan_approve(actor=people["approver"], plan=plan)
    plan = services.plan_update(actor=people["author"], plan=plan, changes={"rate_per_second": 50})
    assert plan.state == PlanState.DRAFT and not selectors.valid_approvals(plan)
    assert PlanApproval.objects.get().voided_at is not None
    event = AuditEvent.objects.filter(action=AuditAction.PLAN_UPDATED).latest("seq")
    assert event.after["approvals_voided"] == 1
    plan = services.plan_submit(actor=people["author"], plan=plan)
    with pytest.raises(InvalidInput, match="approved"):
        services.run_start(actor=people["author"], plan=plan)


def test_two_approvals_when_the_plan_asks_for_two(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"], required_approvals=2))
    plan = services.plan_approve(actor=people["approver"], plan=plan)
    assert plan.state == PlanState.SUBMITTED
    with pytest.raises(InvalidInput, match="already approved"):
        services.plan_approve(actor=people["approver"], plan=plan)
    assert services.plan_approve(actor=people["other"], plan=plan).state == PlanState.APPROVED


def test_an_expired_approval_does_not_start_a_run(dlq, people, settings) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    plan = services.plan_approve(actor=people["approver"], plan=plan)
    PlanApproval.objects.update(created_at=timezone.now() - timedelta(seconds=settings.RECOVERY_APPROVAL_TTL + 5))
    with pytest.raises(InvalidInput, match="expired"):
        services.run_start(actor=people["author"], plan=plan)


def test_a_tampered_plan_cannot_be_approved(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    PlanItem.objects.filter(plan=plan).update(target={"broker": 1, "name": "elsewhere"})
    with pytest.raises(InvalidInput, match="changed since it was submitted"):
        services.plan_approve(actor=people["approver"], plan=plan)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rate_per_second": 0}, "rate"),
        ({"rate_per_second": 10_000_000}, "rate"),
        ({"batch_size": 0}, "batch size"),
        ({"workers": 99}, "workers"),
        ({"ramp_steps": [50, 10]}, "ramp steps"),
        ({"required_approvals": 0}, "approvals"),
        ({"rate_per_second": 5, "batch_size": 10}, "above the rate"),
        ({"name": ""}, "name"),
        ({"state": "approved"}, "cannot be changed"),
    ],
)
def test_bad_plan_settings_are_refused_and_change_nothing(dlq, people, changes, message) -> None:
    plan = draft(dlq, people["author"])
    before = AuditEvent.objects.count()
    with pytest.raises(InvalidInput, match=message):
        services.plan_update(actor=people["author"], plan=plan, changes=changes)
    assert AuditEvent.objects.count() == before


def test_an_sqs_target_refuses_batches_above_ten(dlq, people) -> None:
    sqs = BrokerFactory(kind=BrokerKind.SQS)
    plan = draft(dlq, people["author"])
    with pytest.raises(InvalidInput, match="batch size.*sqs"):
        changes = {"target_broker": sqs, "target_address": "http://q", "batch_size": 50}
        services.plan_update(actor=people["author"], plan=plan, changes=changes)


def test_an_empty_selection_cannot_be_submitted(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True, category=Category.POISON, disposition=Disposition.HOLD)
    with pytest.raises(InvalidInput, match="nothing to replay: 1 poison"):
        services.plan_submit(actor=people["author"], plan=draft(dlq, people["author"]))
    assert not PlanItem.objects.exists()
