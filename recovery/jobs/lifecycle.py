"""Moving a job row (recovery.models.jobs.BackgroundJob) through its one lifecycle:
queued -> running -> succeeded / failed / cancelled.

Every change is a conditional UPDATE on the row's state, so two deliveries of the same job, or a
worker and the watchdog, never both move it: whoever's UPDATE matched owns the transition.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from recovery.models.jobs import BackgroundJob, JobState

LOG_LINES = 50


def job_claim(
    rows: type[BackgroundJob] | QuerySet[Any],
    pk: int,
    *,
    stale_after: timedelta | None = None,
    rerun_failed: bool = False,
) -> bool:
    """The worker's claim: queued -> running (``rows``: the model, or a queryset narrowing it).
    With ``stale_after``, a row still marked running whose heartbeat is older than that is claimed
    again too (its worker died; the job continues from its checkpoint); with ``rerun_failed``, a
    failed row is run again. Returns whether this caller got the row."""
    now = timezone.now()
    queryset = rows if isinstance(rows, QuerySet) else rows.objects.all()
    claimable = Q(state=JobState.QUEUED)
    if rerun_failed:
        claimable |= Q(state=JobState.FAILED)
    if stale_after is not None:
        claimable |= Q(state=JobState.RUNNING, heartbeat_at__lt=now - stale_after)
    return bool(
        queryset.filter(claimable, pk=pk).update(
            state=JobState.RUNNING,
            started_at=Coalesce(F("started_at"), now),
            heartbeat_at=now,
            deliveries=F("deliveries") + 1,
            error="",
        )
    )


def job_beat(model: type[BackgroundJob], pk: int, **progress: Any) -> None:
    """A running job's heartbeat, with whatever progress fields changed (``processed``, ``total``
    or the kind's own counters)."""
    model.objects.filter(pk=pk, state=JobState.RUNNING).update(heartbeat_at=timezone.now(), **progress)


def job_note(row: BackgroundJob, message: str) -> None:
    """Append a log line to the row (the last LOG_LINES are kept)."""
    entry = {"at": timezone.now().isoformat(timespec="seconds"), "message": message[:1000]}
    row.log = [*row.log, entry][-LOG_LINES:]
    type(row).objects.filter(pk=row.pk).update(log=row.log)


def job_finish(model: type[BackgroundJob], pk: int, *, error: str = "", **fields: Any) -> bool:
    """running -> succeeded, or failed with ``error``. Only a running row ends this way, so a row
    the watchdog already retired stays as it is; returns whether this caller ended it."""
    now = timezone.now()
    return bool(
        model.objects.filter(pk=pk, state=JobState.RUNNING).update(
            state=JobState.FAILED if error else JobState.SUCCEEDED,
            finished_at=now,
            heartbeat_at=now,
            error=error[:4000],
            **fields,
        )
    )


def job_cancel(model: type[BackgroundJob], pk: int, *, reason: str) -> bool:
    """queued -> cancelled (a job nobody needs any more, e.g. superseded before it started)."""
    return bool(
        model.objects.filter(pk=pk, state=JobState.QUEUED).update(
            state=JobState.CANCELLED, finished_at=timezone.now(), error=reason[:4000]
        )
    )
