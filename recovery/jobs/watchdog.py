"""The one watchdog of job rows (recovery.models.jobs.BackgroundJob), run by the periodic
``job_watchdog`` job on every scheduler tick.

A job is lost when its row is
- queued and not started RECOVERY_JOB_LOST_AFTER seconds after it was last enqueued (the queue
  entry vanished: Redis restarted, a worker took it and died before claiming), or
- running without a heartbeat for RECOVERY_JOB_STALE_AFTER seconds (its worker was killed).

Each kind says what is done with its lost rows (``lost_policy``): RETRY enqueues the same row
again (its job continues from its checkpoint or starts over) up to RECOVERY_JOB_RETRIES times,
then fails it; RETIRE fails it at once, and the kind's ``job_retired`` hook lets fresh work take
over (a capture pass makes its DLQ due again, so no DLQ is left uncaptured). Every move is a
conditional UPDATE, so two watchdogs, or a watchdog and a late worker, never both act.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from recovery.jobs.queue import enqueue
from recovery.models import AuditVerification, CapturePass, DrillRun, TriageJob
from recovery.models.jobs import BackgroundJob, JobState, LostJobPolicy

log = logging.getLogger(__name__)

# Every kind of job row the watchdog looks after.
JOB_MODELS: tuple[type[BackgroundJob], ...] = (CapturePass, TriageJob, AuditVerification, DrillRun)


@dataclass(frozen=True)
class LostJob:
    model: str
    pk: int
    action: str  # "retried" or "retired"


def stale_after() -> timedelta:
    """How long a running job may go without a heartbeat before it is taken as lost."""
    return timedelta(seconds=settings.RECOVERY_JOB_STALE_AFTER)


def lost_after() -> timedelta:
    """How long a queued job may wait for a worker before its queue entry is taken as lost."""
    return timedelta(seconds=settings.RECOVERY_JOB_LOST_AFTER)


def lost_jobs_recover() -> list[LostJob]:
    """Retire or retry every lost job row of every kind (see the module docstring)."""
    acted: list[LostJob] = []
    for model in JOB_MODELS:
        for row in lost_rows(model):
            action = recover_lost(row)
            if action:
                acted.append(LostJob(model=model.__name__, pk=row.pk, action=action))
                log.warning("%s %s: job %s %s", model.__name__, row.pk, row.job_name, action)
    return acted


def lost_rows(model: type[BackgroundJob], queryset=None) -> list[BackgroundJob]:
    """The rows of ``model`` (or of ``queryset``) whose job is lost now."""
    now = timezone.now()
    lost = Q(state=JobState.QUEUED, enqueued_at__lt=now - lost_after()) | Q(
        state=JobState.RUNNING, heartbeat_at__lt=now - stale_after()
    )
    rows = queryset if queryset is not None else model.objects.all()
    return list(rows.filter(lost).order_by("pk")[:1000])


def recover_lost(row: BackgroundJob) -> str:
    """Retry or retire one lost row; returns what was done, or "" when someone else moved it first."""
    model = type(row)
    was = Q(pk=row.pk, state=row.state, enqueued_at=row.enqueued_at, heartbeat_at=row.heartbeat_at)
    now = timezone.now()
    if row.lost_policy == LostJobPolicy.RETRY and row.retries < settings.RECOVERY_JOB_RETRIES:
        with transaction.atomic():
            if not model.objects.filter(was).update(
                state=JobState.QUEUED, enqueued_at=now, retries=F("retries") + 1, error=""
            ):
                return ""
            enqueue(row.job_name, row.pk)
        return "retried"
    why = "queued, never started" if row.state == JobState.QUEUED else "worker lost (no heartbeat)"
    retried = f" after {row.retries} retries" if row.lost_policy == LostJobPolicy.RETRY else ""
    with transaction.atomic():
        if not model.objects.filter(was).update(
            state=JobState.FAILED, finished_at=now, error=f"job lost: {why}{retried}; retired by the watchdog"
        ):
            return ""
        retired = getattr(row, "job_retired", None)
        if retired is not None:
            retired()
    return "retired"
