"""Bulk triage, plan drafts and runbooks: attributable (audit + per-letter items), never
deleting, refused without the capability, and resumable when a background job dies."""

from __future__ import annotations

import pytest

from recovery.errors import InvalidInput, NotPermitted
from recovery.models import (
    AuditAction,
    AuditEvent,
    Category,
    DeadLetter,
    DeadLetterState,
    Disposition,
    JobState,
    TriageActionItem,
    TriageJob,
)
from recovery.permissions import Role
from recovery.triage.filters import LetterFilter
from recovery.triage.services import (
    group_runbook_set,
    letters_triage,
    plan_draft_create,
    runbook_save,
    triage_bulk_run,
)
from tests.factories import FingerprintGroupFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_setting_a_category_on_picked_letters_is_immediate_audited_and_on_each_timeline(make_user, make_letter) -> None:
    operator = make_user(Role.OPERATOR)
    picked, other = make_letter(), make_letter()
    action = letters_triage(
        actor=operator, selection=LetterFilter(ids=(picked.pk,)), kind="set_category", value="poison"
    )
    assert action.job is None and action.letter_count == 1
    picked.refresh_from_db(), other.refresh_from_db()
    assert (picked.category, picked.classified_by) == (Category.POISON, "manual")
    assert other.category == Category.UNKNOWN
    assert list(TriageActionItem.objects.filter(action=action).values_list("letter_id", flat=True)) == [picked.pk]
    event = AuditEvent.objects.get(action=AuditAction.LETTERS_TRIAGED)
    assert event.actor_name == operator.username and "1 letter" in event.summary


def test_discard_needs_a_reason_and_keeps_the_row(make_user, make_letter) -> None:
    operator = make_user(Role.OPERATOR)
    letter = make_letter()
    with pytest.raises(InvalidInput, match="reason"):
        letters_triage(actor=operator, selection=LetterFilter(ids=(letter.pk,)), kind="discard", reason=" ")
    letters_triage(
        actor=operator, selection=LetterFilter(ids=(letter.pk,)), kind="discard", reason="test data from load test"
    )
    letter.refresh_from_db()
    assert letter.state == DeadLetterState.DISCARDED and letter.disposition == Disposition.DISCARD
    assert letter.discard_reason == "test data from load test" and letter.discarded_at is not None
    assert DeadLetter.objects.filter(pk=letter.pk).exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER, Role.ADMIN])
def test_roles_without_the_classify_capability_are_refused_by_the_service(make_user, make_letter, role) -> None:
    letter = make_letter()
    with pytest.raises(NotPermitted):
        letters_triage(actor=make_user(role), selection=LetterFilter(ids=(letter.pk,)), kind="hold")
    assert not AuditEvent.objects.filter(action=AuditAction.LETTERS_TRIAGED).exists()


@pytest.mark.parametrize(("kind", "value"), [("set_category", "bogus"), ("set_disposition", "poison"), ("explode", "")])
def test_bad_actions_are_refused(make_user, make_letter, kind, value) -> None:
    letter = make_letter()
    with pytest.raises(InvalidInput):
        letters_triage(actor=make_user(Role.OPERATOR), selection=LetterFilter(ids=(letter.pk,)), kind=kind, value=value)


def test_a_whole_filter_result_runs_as_a_job_that_resumes_after_a_crash(make_user, make_letter, monkeypatch) -> None:
    import recovery.triage.services as services

    monkeypatch.setattr(services, "CHUNK", 3)
    matching = [make_letter(category=Category.TRANSIENT) for _ in range(7)]
    make_letter(category=Category.POISON)
    action = letters_triage(
        actor=make_user(Role.OPERATOR), selection=LetterFilter(category=("transient",)), kind="set_disposition",
        value="replay",
    )  # fmt: skip
    job = action.job
    assert job.state == JobState.QUEUED
    late = make_letter(category=Category.TRANSIENT)  # captured after the request: must not join

    calls = {"n": 0}
    original = services._apply_chunk

    def dies_on_the_second_chunk(action, ids):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return original(action, ids)

    monkeypatch.setattr(services, "_apply_chunk", dies_on_the_second_chunk)
    with pytest.raises(RuntimeError):
        triage_bulk_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and job.processed == 3
    # An operator (or the job system) runs it again: it continues after the last committed chunk.
    TriageJob.objects.filter(pk=job.pk).update(state=JobState.QUEUED)
    monkeypatch.setattr(services, "_apply_chunk", original)
    done = triage_bulk_run(job_id=job.pk)
    assert done.state == JobState.SUCCEEDED and done.processed == 7 and done.total == 7 and done.percent == 100
    replay = set(DeadLetter.objects.filter(disposition=Disposition.REPLAY).values_list("id", flat=True))
    assert replay == {letter.pk for letter in matching}
    late.refresh_from_db()
    assert late.disposition == Disposition.HOLD
    assert TriageActionItem.objects.filter(action=action).count() == 7


def test_a_plan_draft_freezes_its_selection_and_needs_the_plan_capability(make_user, make_letter) -> None:
    make_letter(category=Category.TRANSIENT)
    with pytest.raises(NotPermitted):
        plan_draft_create(actor=make_user(Role.VIEWER), selection=LetterFilter(), name="x")
    with pytest.raises(InvalidInput, match="name"):
        plan_draft_create(actor=make_user(Role.OPERATOR), selection=LetterFilter(), name="  ")
    plan = plan_draft_create(
        actor=make_user(Role.OPERATOR), selection=LetterFilter(category=("transient",)), name="retry timeouts"
    )
    assert plan.selection["category"] == ["transient"] and plan.selection["max_id"] >= 1
    assert AuditEvent.objects.filter(action=AuditAction.PLAN_CREATED, object_id=str(plan.pk)).exists()


def test_runbooks_are_audited_and_refuse_non_http_links(make_user, make_letter) -> None:
    operator = make_user(Role.OPERATOR)
    with pytest.raises(InvalidInput, match="http"):
        runbook_save(actor=operator, title="t", links=[{"title": "x", "url": "javascript:alert(1)"}])
    runbook = runbook_save(actor=operator, title="Payments timeouts", body="**Replay** after 10 min",
                           links=[{"title": "dashboard", "url": "https://grafana.example/d/1"}])  # fmt: skip
    runbook_save(actor=operator, runbook=runbook, title="Payments timeouts", owner="team-payments")
    letter = make_letter(fingerprint="cd" * 32)
    group = FingerprintGroupFactory(fingerprint="cd" * 32, letter_count=1, first_seen=letter.captured_at)
    group_runbook_set(actor=operator, group=group, runbook=runbook)
    group.refresh_from_db()
    assert group.runbook == runbook
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions[-3:] == [AuditAction.RUNBOOK_CREATED, AuditAction.RUNBOOK_UPDATED, AuditAction.RUNBOOK_ATTACHED]
    with pytest.raises(NotPermitted):
        runbook_save(actor=make_user(Role.VIEWER), title="nope")
