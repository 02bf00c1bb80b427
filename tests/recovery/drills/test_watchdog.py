"""Runs whose job was lost: enqueued again once (claimed), or failed when their steps cannot be
redone or they are past their deadline; and a run's job claims it with a lease."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_rq
import pytest
from django.utils import timezone

from recovery.drills.runner import LEASE_SECONDS, LOST_AFTER_SECONDS, drill_run_execute
from recovery.drills.watchdog import drill_runs_recover
from recovery.models import DrillRun, DrillRunState, DrillTrigger

pytestmark = pytest.mark.django_db(transaction=True)


def _run(drill: Any, **fields: Any) -> DrillRun:
    run = DrillRun.objects.create(drill=drill, trigger=DrillTrigger.MANUAL, **fields)
    created = fields.pop("created_at", None)
    if created:
        DrillRun.objects.filter(pk=run.pk).update(created_at=created)
    run.refresh_from_db()
    return run


def test_a_queued_run_whose_job_was_lost_is_enqueued_again_once(make_drill: Any, test_redis: Any) -> None:
    old = timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 5)
    run = _run(make_drill(), created_at=old)
    assert drill_runs_recover() == [(run.pk, "enqueued again")]
    assert drill_runs_recover() == [], "claimed: the next tick leaves it to the job just enqueued"
    assert [(j.func_name, tuple(j.args)) for j in django_rq.get_queue("bulk").get_jobs()] == [("drill_run", (run.pk,))]


def test_a_first_phase_whose_worker_died_fails_naming_its_step(make_drill: Any, test_redis: Any) -> None:
    expired = timezone.now() - timedelta(seconds=2 * LEASE_SECONDS + 5)
    run = _run(make_drill(), state=DrillRunState.RUNNING, step="captured", lease_owner="w", lease_until=expired,
               deadline_at=timezone.now() + timedelta(minutes=5))  # fmt: skip
    assert drill_runs_recover() == [(run.pk, "failed: worker lost")]
    run.refresh_from_db()
    assert (run.state, run.failed_step) == (DrillRunState.FAILED, "captured")
    assert "worker stopped during step captured" in run.reason


def test_a_run_past_its_deadline_with_nobody_on_it_fails(make_drill: Any, test_redis: Any) -> None:
    past = timezone.now() - timedelta(seconds=LOST_AFTER_SECONDS + 60)
    run = _run(make_drill(), state=DrillRunState.REPLAYING, step="replayed", deadline_at=past, lease_until=past)
    assert drill_runs_recover() == [(run.pk, "failed: timed out")]
    run.refresh_from_db()
    assert (run.state, run.failed_step) == (DrillRunState.FAILED, "replayed")


def test_a_held_run_is_left_alone(make_drill: Any, test_redis: Any) -> None:
    held = timezone.now() + timedelta(seconds=60)
    _run(make_drill(), state=DrillRunState.RUNNING, lease_owner="w", lease_until=held,
         deadline_at=timezone.now() - timedelta(hours=1))  # fmt: skip
    assert drill_runs_recover() == []


def test_a_second_delivery_of_a_held_run_does_nothing(make_drill: Any, test_redis: Any) -> None:
    held = timezone.now() + timedelta(seconds=60)
    run = _run(make_drill(), state=DrillRunState.RUNNING, lease_owner="other", lease_until=held)
    assert drill_run_execute(drill_run_id=run.pk) == "not claimed"
    finished = _run(make_drill(), state=DrillRunState.PASSED)
    assert drill_run_execute(drill_run_id=finished.pk) == "not claimed"
