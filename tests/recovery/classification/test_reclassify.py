"""Re-classification after a rule change: letters classified by rules or by default follow the
new rules; by hand or as duplicates they stay; progress is on the job row; a crashed job re-run
continues from its checkpoint; the job runs through the real queue."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from recovery.classification import services
from recovery.classification.services import letters_classify, reclassify_run, rule_create, rule_update
from recovery.jobs.watchdog import stale_after
from recovery.models import AuditAction, AuditEvent, DeadLetter, JobState, TriageJob
from tests.helpers import run_queued_jobs

RULE = {
    "name": "timeouts",
    "conditions": [{"field": "error_class", "op": "regex", "value": "Timeout"}],
    "category": "transient",
    "disposition": "replay",
}


@pytest.fixture
def letters(make_letter):
    made = {
        "timeout": make_letter(error_class="SocketTimeoutException", body=b"1"),
        "other": make_letter(error_class="KeyError", body=b"2"),
        "manual": make_letter(error_class="SocketTimeoutException", body=b"3"),
        "first": make_letter(error_class="SocketTimeoutException", body=b"dup", headers={"message-id": "m-1"}),
        "duplicate": make_letter(error_class="SocketTimeoutException", body=b"dup", headers={"message-id": "m-1"}),
    }
    letters_classify()
    DeadLetter.objects.filter(pk=made["manual"].pk).update(classified_by="manual", category="business")
    return made


def _state(letter) -> tuple[str, str, str]:
    row = DeadLetter.objects.get(pk=letter.pk)
    return row.category, row.disposition, row.classified_by


@pytest.mark.django_db
def test_a_new_rule_reclassifies_what_rules_and_defaults_classified(letters) -> None:
    assert _state(letters["timeout"]) == ("unknown", "hold", "default")
    rule = rule_create(actor="test", data=RULE)
    job = TriageJob.objects.get()

    done = reclassify_run(job_id=job.pk)

    assert done.state == JobState.SUCCEEDED and done.percent == 100
    assert (done.total, done.processed, done.changed) == (3, 3, 2)  # timeout, other, first; 2 change
    assert _state(letters["timeout"]) == ("transient", "replay", "rule")
    assert DeadLetter.objects.get(pk=letters["timeout"].pk).rule_id == rule.pk
    assert _state(letters["other"]) == ("unknown", "hold", "default")
    assert _state(letters["manual"]) == ("business", "hold", "manual")
    assert _state(letters["duplicate"]) == ("duplicate", "hold", "duplicate")
    (event,) = AuditEvent.objects.filter(action=AuditAction.RECLASSIFY_FINISHED)
    assert "3 letters checked, 2 changed" in event.summary and event.actor_name == "system:classifier"

    rule_update(actor="test", rule=rule, data={"enabled": False})
    reclassify_run(job_id=TriageJob.objects.filter(state=JobState.QUEUED).get().pk)
    assert _state(letters["timeout"]) == ("unknown", "hold", "default")


@pytest.mark.django_db
def test_it_also_classifies_letters_still_waiting(make_letter) -> None:
    waiting = make_letter(error_class="SocketTimeoutException")
    rule_create(actor="test", data=RULE)
    done = reclassify_run(job_id=TriageJob.objects.get().pk)
    assert done.processed == 1 and _state(waiting) == ("transient", "replay", "rule")


@pytest.mark.django_db
def test_a_job_is_claimed_once(letters) -> None:
    rule_create(actor="test", data=RULE)
    job = TriageJob.objects.get()
    TriageJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, heartbeat_at=timezone.now())
    assert reclassify_run(job_id=job.pk) is None  # another worker holds it and is alive
    assert reclassify_run(job_id=123456) is None


@pytest.mark.django_db
def test_a_crashed_job_rerun_continues_from_its_checkpoint(letters, monkeypatch) -> None:
    rule_create(actor="test", data=RULE)
    job = TriageJob.objects.get()
    monkeypatch.setattr(services, "RECLASSIFY_CHUNK", 1)
    first_id = DeadLetter.objects.filter(classified_by__in=["rule", "default"]).order_by("pk").first().pk
    # what a worker killed after its first chunk leaves: running, a stale heartbeat, a checkpoint
    TriageJob.objects.filter(pk=job.pk).update(
        state=JobState.RUNNING,
        started_at=timezone.now() - stale_after() * 2,
        heartbeat_at=timezone.now() - stale_after() * 2,
        total=3,
        processed=1,
        params={"after_id": first_id},
    )

    done = reclassify_run(job_id=job.pk)

    assert done.state == JobState.SUCCEEDED and done.processed == 3
    assert _state(letters["timeout"]) == ("unknown", "hold", "default")  # before the checkpoint: not redone
    assert _state(letters["first"]) == ("transient", "replay", "rule")


@pytest.mark.django_db
def test_a_failing_job_records_why_and_can_be_rerun(letters, monkeypatch) -> None:
    rule_create(actor="test", data=RULE)
    job = TriageJob.objects.get()

    def broken(**_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services.store, "classified_letters", broken)
    with pytest.raises(RuntimeError):
        reclassify_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "database went away" in job.error
    monkeypatch.undo()
    assert reclassify_run(job_id=job.pk).state == JobState.SUCCEEDED


@pytest.mark.django_db
def test_a_newer_job_supersedes_a_running_one(letters, monkeypatch) -> None:
    monkeypatch.setattr(services, "RECLASSIFY_CHUNK", 1)
    rule_create(actor="test", data=RULE)
    old = TriageJob.objects.get()
    newer = TriageJob.objects.create(kind=old.kind)
    done = reclassify_run(job_id=old.pk)
    assert done.params["superseded_by"] == newer.pk and done.processed == 1


@pytest.mark.django_db(transaction=True)
def test_a_rule_change_runs_the_job_through_the_queue(make_letter, test_redis) -> None:
    import django_rq

    letter = make_letter(error_class="SocketTimeoutException")
    letters_classify()
    with transaction.atomic():
        rule_create(actor="test", data=RULE)  # enqueued on commit
    queue = django_rq.get_queue("bulk")
    assert queue.count == 1
    run_queued_jobs("bulk")
    assert TriageJob.objects.get().state == JobState.SUCCEEDED
    assert _state(letter) == ("transient", "replay", "rule")
