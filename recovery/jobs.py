"""Background-job entry points: ids in, one service call, nothing else.

The same functions run under RQ and under Celery (see recovery.job_backend). Each is an
``observed_job``: a span, its ids in the log context, its outcome in the metrics.
"""

from __future__ import annotations

import os
import socket

from django.conf import settings

from recovery.audit.services import audit_checkpoint_record, audit_verification_run
from recovery.capture.services import capture_due_passes_enqueue, capture_pass_run
from recovery.classification.services import reclassify_run
from recovery.health.services import worker_heartbeat_record
from recovery.job_backend import enqueue
from recovery.observability.depth import dlq_depth_reading_due, dlq_depths_record
from recovery.observability.jobs import observed_job


@observed_job
def scheduler_tick() -> None:
    """Run by the scheduler (RQ cron or Celery beat) every RECOVERY_SCHEDULER_INTERVAL seconds:
    enqueues the periodic work that is due."""
    enqueue(worker_heartbeat, settings.RECOVERY_JOB_BACKEND)
    enqueue(audit_checkpoint)
    enqueue(capture_schedule)
    enqueue(replay_watchdog)
    enqueue(drill_schedule)
    if dlq_depth_reading_due():
        enqueue(dlq_depths)


@observed_job
def capture_schedule() -> None:
    """Create and enqueue a capture pass for every DLQ whose scheduled capture is due."""
    capture_due_passes_enqueue()


@observed_job
def capture_dlq(pass_id: int) -> None:
    """Run one capture pass (created before this job was enqueued)."""
    capture_pass_run(pass_id=pass_id)


@observed_job
def classify_dlq(dlq_id: int) -> None:
    """Classify a DLQ's letters not classified yet (enqueued by its capture passes)."""
    from recovery.classification.services import letters_classify
    from recovery.models import DeadLetterQueue

    dlq = DeadLetterQueue.objects.filter(pk=dlq_id).first()
    for _ in range(1000):  # 10 million letters at most per job; the next capture asks again
        if dlq is None or not letters_classify(dlq=dlq).seen:
            break


@observed_job
def triage_bulk(job_id: int) -> None:
    """Apply a bulk triage action to a whole filter result (the job row carries the progress)."""
    from recovery.triage.services import triage_bulk_run

    triage_bulk_run(job_id=job_id)


@observed_job
def replay_worker(run_id: int, worker: int) -> None:
    """One worker of a replay run: claims, rate-limits, publishes and records batches."""
    from recovery.replay.engine import Worker

    Worker(run_id, worker).run()


@observed_job
def replay_watchdog() -> None:
    """Re-enqueue the workers of running replays whose heartbeat stopped (a killed worker)."""
    from recovery.replay.engine import watchdog

    watchdog()


@observed_job
def drill_schedule() -> None:
    """Create and enqueue the runs of drills whose scheduled slot is due (each slot claimed once),
    and enqueue again or fail drill runs whose job was lost."""
    from recovery.drills.watchdog import drill_tick

    drill_tick()


@observed_job
def drill_run(drill_run_id: int) -> None:
    """Work on one drill run (created before this job was enqueued): its steps up to the replay's
    start, or, delivered again, the wait for the replay, the verification and the clean-up."""
    from recovery.drills.runner import drill_run_execute

    drill_run_execute(drill_run_id=drill_run_id)


@observed_job
def dlq_depths() -> None:
    """Read the broker-side depth of the DLQs no scheduled capture reads, for /metrics."""
    dlq_depths_record()


@observed_job
def audit_checkpoint() -> None:
    """Sign the audit chain's head when it moved and AUDIT_CHECKPOINT_INTERVAL has passed."""
    audit_checkpoint_record()


@observed_job
def audit_verify(verification_id: int) -> None:
    """Verify the audit chain for a verification row created from the console."""
    audit_verification_run(verification_id=verification_id)


@observed_job
def reclassify(job_id: int) -> None:
    """Re-apply the classification rules after a rule change (a TriageJob row created before
    this job was enqueued; re-running a crashed one continues from its checkpoint)."""
    reclassify_run(job_id=job_id)


@observed_job
def worker_heartbeat(backend: str) -> None:
    """Proves the scheduler -> queue -> worker -> database path; shown on the health page."""
    worker_heartbeat_record(backend=backend, worker=_worker_name())


def _worker_name() -> str:
    """The worker's stable name: RQ forks a new process per job, so its pid would not do."""
    from rq import get_current_job

    job = get_current_job()
    if job is not None and job.worker_name:
        return job.worker_name
    from celery import current_task

    if current_task and current_task.request.hostname:
        return current_task.request.hostname
    return f"{socket.gethostname()}:{os.getpid()}"
