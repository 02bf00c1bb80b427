"""Issue 7: "the scheduler runs a due drill once with two scheduler processes up". A slot is
claimed with a conditional UPDATE of next_run_at and a unique (drill, slot) run row."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import connections
from django.utils import timezone

from recovery.drills.services import drill_approve, drill_run_now, drill_schedule_due
from recovery.jobs import definitions as jobs
from recovery.models import (
    AuditEvent,
    BrokerKind,
    DrillOutcome,
    DrillRun,
    DrillTrigger,
    JobState,
    WorkerHeartbeat,
)
from tests.factories import BrokerFactory
from tests.helpers import wait_until
from tests.recovery.test_job_backends import RQ_WORKER, VENV_BIN, _process

YEARLY = "0 0 1 1 *"  # the next slot after the one a test makes due is months away


def _due(drill: Any) -> datetime:
    slot = timezone.now() - timedelta(seconds=5)
    type(drill).objects.filter(pk=drill.pk).update(next_run_at=slot)
    return slot


@pytest.mark.django_db
def test_a_due_approved_drill_gets_one_queued_run_and_its_next_slot(make_drill: Any, people: Any) -> None:
    drill = make_drill(schedule="*/15 * * * *")
    drill_approve(actor=people["approver"], drill=drill)
    slot = _due(drill)
    (run,) = drill_schedule_due()
    assert (run.trigger, run.slot, run.state, run.approval.approver) == (
        DrillTrigger.SCHEDULE, slot, JobState.QUEUED, people["approver"],
    )  # fmt: skip
    drill.refresh_from_db()
    assert drill.next_run_at > timezone.now() and drill.next_run_at.minute % 15 == 0
    assert drill_schedule_due() == [], "the slot is taken; the next one is not due"
    event = AuditEvent.objects.get(action="drill.scheduled")
    assert event.after["runs"][0]["run"] == run.pk


@pytest.mark.django_db
def test_a_paused_drill_is_not_scheduled(make_drill: Any, people: Any) -> None:
    drill = make_drill(enabled=False)
    drill_approve(actor=people["approver"], drill=drill)
    _due(drill)
    type(drill).objects.filter(pk=drill.pk).update(enabled=False)
    assert drill_schedule_due() == []


@pytest.mark.django_db
def test_a_slot_that_comes_while_a_run_is_active_is_skipped(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    drill_approve(actor=people["approver"], drill=drill)
    active = drill_run_now(actor=people["author"], drill=drill)
    _due(drill)
    (run,) = drill_schedule_due()
    assert (run.outcome, run.state) == (DrillOutcome.SKIPPED, JobState.CANCELLED)
    assert f"run {active.pk} is still active" in run.reason


@pytest.mark.django_db
def test_the_scheduler_tick_enqueues_the_drill_schedule(
    settings: Any, test_redis: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    with django_capture_on_commit_callbacks(execute=True):
        jobs.scheduler_tick()
    names = [job.func_name for job in django_rq.get_queue("periodic").get_jobs()]
    assert "drill_schedule" in names


@pytest.mark.django_db(transaction=True)
def test_concurrent_schedulers_claim_a_slot_once(make_drill: Any, people: Any, test_redis: Any) -> None:
    drill = make_drill(schedule=YEARLY)
    drill_approve(actor=people["approver"], drill=drill)
    slot = _due(drill)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            start.wait(timeout=10)
            drill_schedule_due()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert list(DrillRun.objects.filter(drill=drill).values_list("slot", flat=True)) == [slot]
    assert len(django_rq.get_queue("bulk").get_jobs()) == 1, "one drill_run job for the slot"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
# timing: two workers must keep up with two schedulers ticking every second, or the drill run
# waits behind periodic jobs on its bulk queue; on a machine busy with parallel tests they do not
@pytest.mark.timing
def test_two_scheduler_processes_run_a_due_drill_once(
    make_drill: Any, people: Any, test_redis: Any, tmp_path: Path
) -> None:
    # an unreachable broker: the run itself fails fast at its first step; what counts is how many runs
    down = BrokerFactory(kind=BrokerKind.RABBITMQ)
    drill = make_drill(broker=down, schedule=YEARLY)
    drill_approve(actor=people["approver"], drill=drill)
    slot = _due(drill)
    scheduler = [str(VENV_BIN / "python"), "manage.py", "scheduler"]
    logs = [tmp_path / name for name in ("cron1.log", "cron2.log", "worker1.log", "worker2.log")]

    def beats() -> int:
        return sum(WorkerHeartbeat.objects.filter(backend="rq").values_list("beats", flat=True))

    with (
        _process(scheduler, "rq", logs[0]), _process(scheduler, "rq", logs[1]),
        _process(RQ_WORKER, "rq", logs[2]), _process(RQ_WORKER, "rq", logs[3]),
    ):  # fmt: skip
        ran = wait_until(lambda: DrillRun.objects.filter(drill=drill).exists(), timeout=60, interval=0.2)
        after = beats()
        # several more ticks of both schedulers after the slot was taken
        more = wait_until(lambda: beats() >= after + 6, timeout=60, interval=0.2)
        finished = wait_until(
            lambda: not DrillRun.objects.filter(drill=drill, state__in=("queued", "running")).exists(), timeout=30
        )
    output = "\n".join(path.read_text()[-1500:] for path in logs)
    left = [(r.pk, r.status, r.step, r.deliveries, r.enqueued_at, r.heartbeat_at) for r in drill.runs.all()]
    assert ran and more and finished, f"{(ran, more, finished)} runs: {left}\n{output}"
    ticked = all("sent scheduler_tick to the periodic queue" in path.read_text() for path in logs[:2])
    assert ticked, "both schedulers ticked"
    runs = list(DrillRun.objects.filter(drill=drill))
    assert [(r.slot, r.trigger) for r in runs] == [(slot, DrillTrigger.SCHEDULE)], output
    assert runs[0].outcome == DrillOutcome.FAILED and runs[0].failed_step == "provisioned", runs[0].reason
    assert runs[0].slot.tzinfo is not None and runs[0].slot.astimezone(UTC) == slot
