"""Issue 7, "what it must show": one drill per broker runs end to end against the real broker
and passes; a drill whose consumer stays broken fails with the failing step named.

The jobs run as a worker would take them off the real RQ queue (tests.helpers.JobRunner): the
drill run's first job, the replay's worker jobs that run_start enqueues, and the drill run's
continuation. Nothing is mocked: the brokers dead-letter real messages, capture passes capture
them, the default rules classify them, the replay engine republishes them.
"""

from __future__ import annotations

from typing import Any

import pytest

from recovery.drills.services import drill_approve, drill_create, drill_run_now
from recovery.models import (
    AuditAction,
    AuditEvent,
    DeadLetter,
    DrillOutcome,
    DrillRun,
    DrillStep,
    JobState,
    PlanApproval,
    RunState,
)
from tests.helpers import JobRunner, wait_until
from tests.namespace import unique

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _run_to_the_end(drill: Any, people: dict[str, Any], timeout: float = 90) -> DrillRun:
    runner = JobRunner()
    runner.start()
    try:
        run = drill_run_now(actor=people["author"], drill=drill)
        finished = wait_until(
            lambda: DrillRun.objects.get(pk=run.pk).outcome != "",  # ended: passed, failed or skipped
            timeout=timeout, interval=0.2,
        )  # fmt: skip
    finally:
        runner.stop()
    run.refresh_from_db()
    assert finished, f"still {run.status} at step {run.step}: {run.steps}"
    assert not runner.errors, runner.errors
    return run


def _define(harness: Any, people: dict[str, Any], **data: Any) -> Any:
    values = {
        "name": unique(f"e2e-{harness.kind}", 6), "broker": harness.broker, "schedule": "*/5 * * * *",
        "message_count": 6, "transient_count": 2, "poison_count": 1, "timeout_seconds": 120, **data,
    }  # fmt: skip
    drill = drill_create(actor=people["author"], data=values)
    drill_approve(actor=people["approver"], drill=drill, comment="template checked")
    return drill


def test_a_drill_runs_end_to_end_on_each_broker_and_passes(
    harness: Any, people: dict[str, Any], default_rules: None, test_redis: Any
) -> None:
    drill = _define(harness, people)
    run = _run_to_the_end(drill, people)

    assert run.outcome == DrillOutcome.PASSED, f"{run.failed_step}: {run.reason}\n{run.steps}"
    assert (run.state, run.error) == (JobState.SUCCEEDED, "")
    assert run.deliveries >= 2, "a first job and at least one continuation claimed it"
    assert (run.processed, run.total) == (8, 8)
    assert [s["step"] for s in run.steps] == [
        "provisioned", "injected", "dead_lettered", "captured", "classified", "replayed", "verified", "cleaned_up",
    ]  # fmt: skip
    assert all(s["ok"] and s["seconds"] >= 0 for s in run.steps)
    assert (run.injected, run.dead_lettered, run.captured, run.replayed, run.recovered) == (6, 3, 3, 2, 2)
    assert (run.lost, run.unexplained_duplicates) == (0, 0)
    assert run.time_to_capture_seconds is not None and run.time_to_recover_seconds is not None
    assert all(e["ok"] for e in run.expectations), run.expectations
    # four eyes held: the run's plan was authored by the drill's author and approved in the
    # approver's name, on the strength of the drill's standing approval
    assert run.plan.author == people["author"]
    approval = PlanApproval.objects.get(plan=run.plan)
    assert approval.approver == people["approver"] and "standing approval" in approval.comment
    assert AuditEvent.objects.filter(action=AuditAction.DRILL_PLAN_APPROVED, object_id=str(run.plan.pk)).exists()
    # no verification step in the drill's template: the replay is completed, not verified (issue 15);
    # the drill's own consumer accounting is the evidence of recovery
    assert run.replay_run.state == RunState.COMPLETED_NOT_VERIFIED and run.replay_run.published == 2
    # clean-up: the run's synthetic letters are discarded (kept as evidence), the queue pair stays
    drill.refresh_from_db()
    letters = DeadLetter.objects.filter(dlq=drill.dlq, id__gt=run.letter_baseline)
    assert letters.count() == 3 and set(letters.values_list("state", flat=True)) == {"discarded"}
    assert (drill.runs_total, drill.failures_total, drill.last_outcome) == (1, 0, "passed")
    assert set(drill.created_queues) >= {drill.work_queue, drill.dead_letter_queue}


@pytest.mark.parametrize("harness", ["rabbitmq", "sqs", "kafka"], indirect=True)
def test_a_drill_whose_consumer_stays_broken_fails_naming_the_step(
    harness: Any, people: dict[str, Any], default_rules: None, test_redis: Any
) -> None:
    drill = _define(harness, people, consumer_recovers=False, message_count=4, transient_count=2, poison_count=1)
    run = _run_to_the_end(drill, people)

    assert (run.outcome, run.state) == (DrillOutcome.FAILED, JobState.FAILED)
    assert run.failed_step == DrillStep.VERIFIED, run.steps
    assert run.error == "", "the drill found recovery broken: its job did not fail"
    assert "not recovered" in run.reason and "back in the DLQ" in run.reason, run.reason
    assert (run.recovered, run.lost) == (0, 0), "the replayed copies failed again: back in the DLQ, not lost"
    unmet = {e["name"] for e in run.expectations if not e["ok"]}
    assert "recovered" in unmet and "lost" not in unmet
    drill.refresh_from_db()
    assert (drill.failures_total, drill.consecutive_failures, drill.last_outcome) == (1, 1, "failed")
    assert run.alerted_at is not None, "a failing drill raises an alert"


@pytest.mark.parametrize("harness", ["rabbitmq"], indirect=True)
def test_without_rules_for_its_failures_a_drill_fails_at_classified(
    harness: Any, people: dict[str, Any], test_redis: Any
) -> None:
    drill = _define(harness, people)  # no default rules installed: every letter is unknown/hold
    run = _run_to_the_end(drill, people)

    assert (run.outcome, run.failed_step) == (DrillOutcome.FAILED, DrillStep.CLASSIFIED)
    assert "is unknown/hold" in run.reason and "default rules" in run.reason, run.reason
    assert run.plan_id is None and run.replay_run_id is None, "nothing is replayed from a wrong classification"
    assert [s["step"] for s in run.steps][-2:] == ["classified", "cleaned_up"]
    letters = DeadLetter.objects.filter(dlq_id=DrillRun.objects.get(pk=run.pk).drill.dlq_id)
    assert set(letters.values_list("state", flat=True)) == {"discarded"}, "cleaned up after the failure too"
