"""Drill runs whose job was lost, handled by the one job watchdog (recovery.jobs.watchdog) in each
phase: a queued run (first phase or continuation) and a replaying run whose continuation's worker
died are enqueued again once (claimed); a first phase whose worker died cannot be redone and ends
failed at its step, with its audit event and alert; a run past its deadline with nobody on it
ends failed, its replay aborted; a replaying run whose retries ran out ends failed. A run's job
claims it (queued -> running) and a job whose run was claimed again stops at its heartbeat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_rq
import pytest
from django.utils import timezone

from recovery.drills.runner import ClaimLost, DrillRunJob, drill_run_execute
from recovery.jobs.lifecycle import job_claim
from recovery.jobs.watchdog import LostJob, lost_jobs_recover
from recovery.models import (
    AuditEvent,
    DrillOutcome,
    DrillRun,
    DrillRunState,
    JobState,
    ReplayRun,
    RunState,
)
from tests.factories import DrillRunFactory, ReplayRunFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _rq(settings: Any, test_redis: Any) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"


def _run(drill: Any, **fields: Any) -> DrillRun:
    created = fields.pop("created_at", None)
    run = DrillRunFactory(drill=drill, **fields)
    if created:
        DrillRun.objects.filter(pk=run.pk).update(created_at=created)
    run.refresh_from_db()
    return run


def _replay(people: dict[str, Any]) -> ReplayRun:
    """A replay run under way, as a drill run's second phase has one."""
    return ReplayRunFactory(plan__author=people["author"], plan__state="running")


def _lost_ago(settings: Any) -> Any:
    return timezone.now() - timedelta(seconds=settings.RECOVERY_JOB_LOST_AFTER + 5)


def _silent_since(settings: Any) -> Any:
    return timezone.now() - timedelta(seconds=settings.RECOVERY_JOB_STALE_AFTER + 5)


def _enqueued() -> list[tuple[str, tuple[Any, ...]]]:
    return [(j.func_name, tuple(j.args)) for j in django_rq.get_queue("bulk").get_jobs()]


def test_a_queued_run_whose_job_was_lost_is_enqueued_again_once(make_drill: Any, settings: Any) -> None:
    run = _run(make_drill(), enqueued_at=_lost_ago(settings))
    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=run.pk, action="retried")]
    assert lost_jobs_recover() == [], "claimed: the next tick leaves it to the job just enqueued"
    assert _enqueued() == [("drill_run", (run.pk,))]
    run.refresh_from_db()
    assert (run.state, run.status, run.retries, run.outcome) == (JobState.QUEUED, DrillRunState.QUEUED, 1, "")


def test_a_first_phase_whose_worker_died_fails_naming_its_step_with_its_audit_event_and_alert(
    make_drill: Any, settings: Any
) -> None:
    now = timezone.now()
    run = _run(make_drill(), state=JobState.RUNNING, step="captured", heartbeat_at=_silent_since(settings),
               started_at=now - timedelta(minutes=3), deadline_at=now + timedelta(minutes=5))  # fmt: skip
    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=run.pk, action="retired")]
    run.refresh_from_db()
    assert (run.state, run.outcome, run.status, run.failed_step) == (
        JobState.FAILED, DrillOutcome.FAILED, DrillRunState.FAILED, "captured",
    )  # fmt: skip
    assert "worker stopped during step captured" in run.reason
    assert "job lost: worker lost (no heartbeat)" in run.error, "the job's own trouble is its error"
    assert run.alerted_at is not None, "a drill run that did not pass raises its alert"
    event = AuditEvent.objects.get(action="drill.run_finished", object_id=str(run.pk))
    assert event.after["state"] == "failed" and event.after["failed_step"] == "captured"
    run.drill.refresh_from_db()
    assert (run.drill.runs_total, run.drill.failures_total, run.drill.last_outcome) == (1, 1, "failed")
    assert _enqueued() == [], "its steps cannot be redone: nothing is enqueued"
    assert lost_jobs_recover() == []


def test_a_replaying_run_whose_continuation_was_lost_is_enqueued_again(
    make_drill: Any, people: dict[str, Any], settings: Any
) -> None:
    deadline = timezone.now() + timedelta(minutes=5)
    handed_over = _run(make_drill(), replay_run=_replay(people), step="replayed", deadline_at=deadline,
                       enqueued_at=_lost_ago(settings), deliveries=1)  # fmt: skip
    assert handed_over.status == DrillRunState.REPLAYING
    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=handed_over.pk, action="retried")]
    handed_over.refresh_from_db()
    assert (handed_over.state, handed_over.status, handed_over.retries) == (JobState.QUEUED, "replaying", 1)
    assert _enqueued() == [("drill_run", (handed_over.pk,))]


def test_a_replaying_run_whose_worker_died_is_enqueued_again_and_the_old_job_stops(
    make_drill: Any, people: dict[str, Any], settings: Any
) -> None:
    run = _run(make_drill(), replay_run=_replay(people), step="replayed", state=JobState.RUNNING, deliveries=2,
               heartbeat_at=_silent_since(settings), deadline_at=timezone.now() + timedelta(minutes=5))  # fmt: skip
    old_job = DrillRunJob(DrillRun.objects.select_related("drill").get(pk=run.pk))
    assert run.status == DrillRunState.REPLAYING

    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=run.pk, action="retried")]
    run.refresh_from_db()
    assert (run.state, run.status, run.outcome) == (JobState.QUEUED, "replaying", "")
    assert run.replay_run.state == RunState.RUNNING, "the replay goes on: the continuation waits for it"
    assert _enqueued() == [("drill_run", (run.pk,))]
    assert job_claim(DrillRun, run.pk), "the continuation claims it"
    with pytest.raises(ClaimLost):
        old_job.renew()  # the worker thought dead was only slow: it stops without recording anything


def test_a_replaying_run_whose_retries_ran_out_fails_and_its_replay_is_aborted(
    make_drill: Any, people: dict[str, Any], settings: Any
) -> None:
    settings.RECOVERY_JOB_RETRIES = 1
    run = _run(make_drill(), replay_run=_replay(people), step="replayed", retries=1, enqueued_at=_lost_ago(settings),
               deadline_at=timezone.now() + timedelta(minutes=5))  # fmt: skip
    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=run.pk, action="retired")]
    run.refresh_from_db()
    assert (run.state, run.outcome, run.failed_step) == (JobState.FAILED, DrillOutcome.FAILED, "replayed")
    assert "lost again after 1 retries" in run.reason and "after 1 retries" in run.error
    assert run.replay_run.state == RunState.ABORTED
    assert _enqueued() == []


def test_a_run_past_its_deadline_with_nobody_on_it_fails(
    make_drill: Any, people: dict[str, Any], settings: Any
) -> None:
    past = timezone.now() - timedelta(seconds=settings.RECOVERY_JOB_LOST_AFTER + 60)
    run = _run(make_drill(), replay_run=_replay(people), step="replayed", deadline_at=past, enqueued_at=past)
    assert lost_jobs_recover() == [LostJob(model="DrillRun", pk=run.pk, action="retired")]
    run.refresh_from_db()
    assert (run.state, run.outcome, run.failed_step) == (JobState.FAILED, DrillOutcome.FAILED, "replayed")
    assert "timed out: no worker finished the run" in run.reason
    assert run.replay_run.state == RunState.ABORTED and "timed out" in run.replay_run.stop_reason
    assert _enqueued() == [], "not worth redoing: nothing is enqueued"


def test_a_held_run_is_left_alone(make_drill: Any) -> None:
    _run(make_drill(), state=JobState.RUNNING, heartbeat_at=timezone.now(), deliveries=1,
         deadline_at=timezone.now() - timedelta(hours=1))  # fmt: skip
    assert lost_jobs_recover() == [], "its job is alive: the runner fails it at its deadline itself"


def test_a_second_delivery_of_a_held_run_does_nothing(make_drill: Any) -> None:
    run = _run(make_drill(), state=JobState.RUNNING, heartbeat_at=timezone.now(), deliveries=1)
    assert drill_run_execute(drill_run_id=run.pk) == "not claimed"
    finished = _run(make_drill(), state=JobState.SUCCEEDED, outcome=DrillOutcome.PASSED)
    assert drill_run_execute(drill_run_id=finished.pk) == "not claimed"
    run.refresh_from_db()
    assert (run.state, run.deliveries) == (JobState.RUNNING, 1)
