"""The one lifecycle of a background job's row, shared by every kind of background work that has
a row of its own: capture passes, triage jobs (bulk actions and re-classification), audit
verifications and drill runs. (Replay runs have their ledger and their own state machine.)

A row is created before its job is enqueued (the job queue only delivers it: the NetBox job
pattern), claimed by the worker with a conditional UPDATE, kept alive by its heartbeat while it
runs, and ends succeeded, failed or cancelled. The job watchdog (recovery.jobs.watchdog) retires
or retries a row whose job was lost: queued past its limit without starting, or running without
a heartbeat past its limit. recovery.jobs.lifecycle holds the functions that move a row.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.utils import timezone


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


JOB_ACTIVE = (JobState.QUEUED, JobState.RUNNING)
JOB_DONE = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class LostJobPolicy(models.TextChoices):
    """What the watchdog does with a row whose job was lost."""

    RETRY = "retry", "Enqueue it again (the job continues from its checkpoint or starts over)"
    RETIRE = "retire", "Mark it failed (a fresh row does the work again)"


class BackgroundJob(models.Model):
    """A background job's row: its state, timing, heartbeat, progress, error and log lines.

    Subclasses name the registered job that works on them (``job_name``) and what the watchdog
    does when that job is lost (``lost_policy``)."""

    job_name: ClassVar[str] = ""
    lost_policy: ClassVar[str] = LostJobPolicy.RETRY

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(default=timezone.now, help_text="when its job was last sent to a queue")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deliveries = models.PositiveIntegerField(default=0, help_text="times a worker claimed it")
    retries = models.PositiveIntegerField(default=0, help_text="times the watchdog enqueued its lost job again")
    processed = models.PositiveBigIntegerField(default=0, help_text="progress: items done so far")
    total = models.PositiveBigIntegerField(null=True, blank=True, help_text="progress: items to do, when known")
    error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True, help_text="notable events, oldest first: [{at, message}]")

    class Meta:
        abstract = True
        # The watchdog and "is one already queued or running?" look at active rows only.
        indexes = [
            models.Index(
                fields=["state", "enqueued_at"],
                condition=models.Q(state__in=["queued", "running"]),
                name="%(class)s_active_idx",
            )
        ]

    @property
    def active(self) -> bool:
        return self.state in JOB_ACTIVE

    @property
    def percent(self) -> int | None:
        if not self.total:
            return 100 if self.state == JobState.SUCCEEDED else None
        return min(100, int(self.processed * 100 / self.total))
