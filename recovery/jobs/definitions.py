"""The job functions: ids in, one service call, nothing else. Each is registered by name with
the queue it runs on (recovery.jobs.registry); the same functions run under RQ and Celery.

Loaded once by the app's ``ready()``. Services send jobs by name (recovery.jobs.queue) and never
import this module, so importing every service here makes no cycle.
"""

from __future__ import annotations

import os
import socket

from celery import current_task
from django.conf import settings
from rq import get_current_job

from recovery.audit.services import audit_checkpoint_record, audit_verification_run
from recovery.capture.services import capture_due_passes_enqueue, capture_pass_run
from recovery.classification.services import dlq_classify_pending, reclassify_run
from recovery.drills.runner import drill_run_execute
from recovery.drills.watchdog import drill_tick
from recovery.health.services import worker_heartbeat_record
from recovery.jobs.queue import enqueue
from recovery.jobs.registry import JobQueue, job
from recovery.jobs.watchdog import lost_jobs_recover
from recovery.observability.depth import dlq_depth_reading_due, dlq_depths_record
from recovery.replay.breaker import tick as breaker_tick
from recovery.replay.engine import Worker, watchdog
from recovery.triage.services import triage_bulk_run


@job(queue=JobQueue.PERIODIC)
def scheduler_tick() -> None:
    """Sent by the scheduler (``manage.py scheduler`` or Celery beat) every
    RECOVERY_SCHEDULER_INTERVAL seconds: enqueues the periodic work that is due."""
    enqueue("worker_heartbeat", settings.RECOVERY_JOB_BACKEND)
    enqueue("audit_checkpoint")
    enqueue("capture_schedule")
    enqueue("replay_watchdog")
    enqueue("job_watchdog")
    enqueue("drill_schedule")
    if dlq_depth_reading_due():
        enqueue("dlq_depths")


@job(queue=JobQueue.PERIODIC)
def capture_schedule() -> None:
    """Create and enqueue a capture pass for every DLQ whose scheduled capture is due."""
    capture_due_passes_enqueue()


@job(queue=JobQueue.CAPTURE)
def capture_dlq(pass_id: int) -> None:
    """Run one capture pass (created before this job was enqueued)."""
    capture_pass_run(pass_id=pass_id)


@job(queue=JobQueue.CAPTURE)
def classify_dlq(dlq_id: int) -> None:
    """Classify a DLQ's letters not classified yet (enqueued by its capture passes)."""
    dlq_classify_pending(dlq_id=dlq_id)


@job(queue=JobQueue.BULK)
def triage_bulk(job_id: int) -> None:
    """Apply a bulk triage action to a whole filter result (the job row carries the progress)."""
    triage_bulk_run(job_id=job_id)


@job(queue=JobQueue.REPLAY)
def replay_worker(run_id: int, worker: int) -> None:
    """One worker of a replay run: claims, rate-limits, publishes and records batches."""
    Worker(run_id, worker).run()


@job(queue=JobQueue.PERIODIC)
def replay_watchdog() -> None:
    """Re-enqueue the workers of running replays whose heartbeat stopped (a killed worker), and
    send the probe of each circuit breaker whose cool-down is over."""
    watchdog()
    breaker_tick()


@job(queue=JobQueue.PERIODIC)
def job_watchdog() -> None:
    """Retire or retry the job rows (capture passes, triage jobs, audit verifications, drill runs)
    whose job was lost: queued and never started, or running without a heartbeat, past their limit."""
    lost_jobs_recover()


@job(queue=JobQueue.PERIODIC)
def drill_schedule() -> None:
    """Create and enqueue the runs of drills whose scheduled slot is due (each slot claimed once);
    drill runs whose job was lost are the job watchdog's."""
    drill_tick()


@job(queue=JobQueue.BULK)
def drill_run(drill_run_id: int) -> None:
    """Work on one drill run (created before this job was enqueued): its steps up to the replay's
    start, or, delivered again, the wait for the replay, the verification and the clean-up."""
    drill_run_execute(drill_run_id=drill_run_id)


@job(queue=JobQueue.PERIODIC)
def dlq_depths() -> None:
    """Read the broker-side depth of the DLQs no scheduled capture reads, for /metrics."""
    dlq_depths_record()


@job(queue=JobQueue.PERIODIC)
def audit_checkpoint() -> None:
    """Sign the audit chain's head when it moved and AUDIT_CHECKPOINT_INTERVAL has passed."""
    audit_checkpoint_record()


@job(queue=JobQueue.BULK)
def audit_verify(verification_id: int) -> None:
    """Verify the audit chain for a verification row created from the console."""
    audit_verification_run(verification_id=verification_id)


@job(queue=JobQueue.BULK)
def reclassify(job_id: int) -> None:
    """Re-apply the classification rules after a rule change (a TriageJob row created before
    this job was enqueued; re-running a crashed one continues from its checkpoint)."""
    reclassify_run(job_id=job_id)


@job(queue=JobQueue.PERIODIC)
def worker_heartbeat(backend: str) -> None:
    """Proves the scheduler -> queue -> worker -> database path; shown on the health page."""
    worker_heartbeat_record(backend=backend, worker=_worker_name())


def _worker_name() -> str:
    """The worker's stable name: RQ forks a new process per job, so its pid would not do."""
    rq_job = get_current_job()
    if rq_job is not None and rq_job.worker_name:
        return rq_job.worker_name
    if current_task and current_task.request.hostname:
        return current_task.request.hostname
    return f"{socket.gethostname()}:{os.getpid()}"
