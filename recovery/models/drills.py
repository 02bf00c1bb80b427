"""Scheduled recovery drills (issue 7): a drill, its standing approval, and its runs.

Invariants: 7 (four eyes: a drill's replay plan template is approved by an approver who is not
its author; the approval stores the drill's content hash and any change voids it; each run's
replay plan still goes through the replay services and is approved on the strength of that
standing approval), and the scheduler claims each slot once (a conditional UPDATE of
``next_run_at`` plus the unique (drill, slot) run row), so two schedulers never run it twice.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from recovery.models.jobs import JOB_ACTIVE, BackgroundJob, JobState, LostJobPolicy


class Drill(models.Model):
    """A scheduled exercise of the whole recovery loop on a drill queue pair: inject N synthetic
    messages (T fail transiently, P are poison), let a real consumer fail them so the broker
    dead-letters them, capture, classify, replay from the approved template, verify, clean up.

    A drill queue is one whose name starts with ``drill-`` or ``drill.`` (recovery.drills.validation);
    any other queue needs an admin's explicit choice with a reason (``allow_non_drill_queue``).
    """

    name = models.SlugField(max_length=50, unique=True)
    description = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="drills")
    broker = models.ForeignKey("recovery.Broker", on_delete=models.PROTECT, related_name="drills")
    work_queue = models.CharField(max_length=200, help_text="work queue (SQS, RabbitMQ) or topic (Kafka) name")
    dead_letter_queue = models.CharField(max_length=200, help_text="its dead-letter queue or topic name")
    allow_non_drill_queue = models.BooleanField(
        default=False, help_text="an admin chose queues without the drill prefix (explicit, with a reason)"
    )
    non_drill_queue_reason = models.TextField(blank=True)
    non_drill_queue_admin = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Scenario.
    message_count = models.PositiveIntegerField(help_text="synthetic messages injected per run (N)")
    transient_count = models.PositiveIntegerField(help_text="of which fail until replayed (T)")
    poison_count = models.PositiveIntegerField(help_text="of which always fail and must be held (P)")
    consumer_recovers = models.BooleanField(
        default=True, help_text="off: the consumer stays broken, replayed copies fail too (the drill must fail)"
    )
    # Schedule (cron, UTC) and expectations.
    schedule = models.CharField(max_length=100, help_text="cron expression, five fields, UTC")
    enabled = models.BooleanField(default=True, help_text="off: the schedule pauses (run now still works)")
    next_run_at = models.DateTimeField(null=True, blank=True)
    max_capture_seconds = models.PositiveIntegerField(default=60, help_text="expected time to capture (s)")
    max_recover_seconds = models.PositiveIntegerField(default=120, help_text="expected time to recover (s)")
    timeout_seconds = models.PositiveIntegerField(default=300, help_text="a run taking longer fails")
    # Replay plan template (what the approver approves).
    rate_per_second = models.PositiveIntegerField(default=50)
    batch_size = models.PositiveIntegerField(default=10)
    workers = models.PositiveIntegerField(default=1)
    verifications = models.JSONField(default=list, blank=True)
    stop_conditions = models.JSONField(default=list, blank=True)
    alert_webhook_url = models.URLField(max_length=500, blank=True, help_text="POSTed JSON when a run fails")
    # Recorded by the runner: the DLQ row it captures from and the queues it created itself.
    dlq = models.ForeignKey(
        "recovery.DeadLetterQueue", null=True, blank=True, on_delete=models.PROTECT, related_name="drills"
    )
    work_address = models.CharField(max_length=500, blank=True, help_text="SQS queue URL once provisioned")
    created_queues = models.JSONField(default=list, blank=True, help_text="queues/topics the drill created")
    content_hash = models.CharField(max_length=64, blank=True, help_text="hash of what the approver approves")
    # Counters a /metrics exporter reads (recovery.drills.selectors.drill_metrics).
    runs_total = models.PositiveIntegerField(default=0)
    failures_total = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="drill_due_idx")]

    def __str__(self) -> str:
        return self.name


class DrillApproval(models.Model):
    """An approver's standing approval of one version of a drill (invariant 7): it counts only
    while ``content_hash`` equals the drill's and it is not voided; each run's replay plan is
    approved on its strength, by this approver, never by the drill's author."""

    drill = models.ForeignKey(Drill, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    content_hash = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"approval of drill {self.drill_id} by {self.approver_id}"


class DrillTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Run now"


class DrillOutcome(models.TextChoices):
    """What a finished run found (blank while it is active)."""

    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class DrillRunState(models.TextChoices):
    """What the console shows of a run (``DrillRun.status``): its outcome once it ended, else
    "replaying" while its replay is under way, else its job state. Not stored: ``state`` holds
    the job's state (JobState) and ``outcome`` the finding."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    REPLAYING = "replaying", "Replaying"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


DRILL_RUN_ACTIVE = JOB_ACTIVE

# The job state each outcome ends a run in: a drill that found recovery broken failed; a slot
# skipped (unapproved drill, previous run still active) was cancelled before it started.
OUTCOME_STATE = {
    DrillOutcome.PASSED: JobState.SUCCEEDED,
    DrillOutcome.FAILED: JobState.FAILED,
    DrillOutcome.SKIPPED: JobState.CANCELLED,
}


class DrillStep(models.TextChoices):
    PROVISIONED = "provisioned", "Queue pair ready"
    INJECTED = "injected", "Injected"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"
    CAPTURED = "captured", "Captured"
    CLASSIFIED = "classified", "Classified"
    REPLAYED = "replayed", "Replayed"
    VERIFIED = "verified", "Verified"
    CLEANED_UP = "cleaned_up", "Cleaned up"


class DrillRun(BackgroundJob):
    """One run of a drill: a job row of the one lifecycle (recovery.models.jobs). Created before
    its job is enqueued (the job queue only delivers it); a scheduled run is unique per (drill,
    slot). ``steps`` records each step with its start, duration and outcome; ``expectations``
    each expected outcome with pass/fail.

    A run has two phases. The first job claims it (queued -> running) and does the steps up to the
    replay's start; from then on ``replay_run`` is set and the run is *replaying*: it hands its
    worker back (running -> queued, the continuation enqueued) and a continuation job claims it
    again, a slice at a time, until the replay ended, then verifies, cleans up and concludes.
    ``deliveries`` is the claim's fencing token: a job whose run was claimed again since (the
    watchdog re-enqueued it) or ended by the watchdog stops at its next heartbeat.

    State and outcome: ``state`` is the job's (JobState), ``outcome`` what the drill found; an
    ended run has both: passed -> succeeded, failed -> failed, skipped -> cancelled (a slot that
    never ran). ``reason`` says why a run failed or was skipped (or sums up a pass), whatever
    made it fail; ``error`` is only for the job's own trouble: an unexpected exception in the
    runner, or the job watchdog retiring a run whose job was lost. So a drill that found
    recovery broken is failed with an empty ``error``, and a non-empty one says the machinery,
    not the recovery loop, failed it. ``status`` is what the console shows (DrillRunState).

    Lost jobs (recovery.jobs.watchdog): a queued run whose job was lost, first phase or
    continuation, is enqueued again, and so is a replaying run whose continuation's worker died
    (the continuation consumes and waits: it can be redone). A first phase whose worker died
    cannot be redone (its messages were injected) and a run past its deadline with no job on it
    is not worth redoing: both are retired, and ``job_retired`` ends them failed at their step
    (recovery.drills.watchdog)."""

    job_name = "drill_run"

    drill = models.ForeignKey(Drill, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=16, choices=DrillTrigger.choices)
    slot = models.DateTimeField(null=True, blank=True, help_text="the scheduled time this run claimed")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    outcome = models.CharField(
        max_length=16, choices=DrillOutcome.choices, blank=True, help_text="what it found; blank while active"
    )
    step = models.CharField(max_length=16, choices=DrillStep.choices, blank=True, help_text="the step under way")
    failed_step = models.CharField(max_length=16, choices=DrillStep.choices, blank=True)
    reason = models.TextField(blank=True, help_text="why it failed or was skipped")
    drill_hash = models.CharField(max_length=64, blank=True)
    approval = models.ForeignKey(DrillApproval, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deadline_at = models.DateTimeField(null=True, blank=True)
    steps = models.JSONField(default=list, blank=True, help_text="[{step, started_at, seconds, ok, detail}]")
    expectations = models.JSONField(default=list, blank=True, help_text="[{name, expected, actual, ok}]")
    observations = models.JSONField(default=dict, blank=True, help_text="what the consumer saw, per sequence")
    letter_baseline = models.BigIntegerField(default=0, help_text="the DLQ's last letter id before the run")
    plan = models.ForeignKey("recovery.ReplayPlan", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    replay_run = models.ForeignKey(
        "recovery.ReplayRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="set once the replay started: the run is in its second phase",
    )  # fmt: skip
    injected = models.PositiveIntegerField(default=0)
    dead_lettered = models.PositiveIntegerField(default=0)
    captured = models.PositiveIntegerField(default=0)
    replayed = models.PositiveIntegerField(default=0)
    recovered = models.PositiveIntegerField(default=0)
    lost = models.PositiveIntegerField(null=True, blank=True)
    duplicates = models.PositiveIntegerField(null=True, blank=True)
    unexplained_duplicates = models.PositiveIntegerField(null=True, blank=True)
    time_to_capture_seconds = models.FloatField(null=True, blank=True)
    time_to_recover_seconds = models.FloatField(null=True, blank=True)
    alerted_at = models.DateTimeField(null=True, blank=True)
    alert_error = models.TextField(blank=True)

    class Meta(BackgroundJob.Meta):
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["drill", "slot"], name="drill_run_once_per_slot")]
        indexes = [
            *BackgroundJob.Meta.indexes,
            models.Index(fields=["drill", "-created_at"], name="drill_run_recent_idx"),
            models.Index(fields=["state"], name="drill_run_state_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of drill {self.drill_id} ({self.status})"

    @property
    def passed(self) -> bool:
        return self.outcome == DrillOutcome.PASSED

    @property
    def replaying(self) -> bool:
        """The second phase: its replay started and a continuation job (queued or running) works
        on it until it concludes."""
        return self.replay_run_id is not None and self.state in JOB_ACTIVE

    @property
    def status(self) -> str:
        """What the console shows (DrillRunState): the outcome once the run ended, "replaying"
        during the replay phase, else the job's state."""
        if self.outcome:
            return self.outcome
        return DrillRunState.REPLAYING if self.replaying else self.state

    @property
    def status_display(self) -> str:
        status = self.status
        return DrillRunState(status).label if status in DrillRunState.values else self.get_state_display()

    def past_deadline(self, *, grace: timedelta) -> bool:
        """Past its deadline (or, not started, past its timeout since it was created) by ``grace``."""
        deadline = self.deadline_at or self.created_at + timedelta(seconds=self.drill.timeout_seconds)
        return timezone.now() > deadline + grace

    @property
    def lost_policy(self) -> str:  # type: ignore[override]
        """What the job watchdog does when this run's job was lost (see the class docstring): a
        first phase that started, or a run past its deadline, is retired; anything else retried."""
        if self.state == JobState.RUNNING and self.replay_run_id is None:
            return LostJobPolicy.RETIRE
        if self.past_deadline(grace=timedelta(seconds=settings.RECOVERY_JOB_LOST_AFTER)):
            return LostJobPolicy.RETIRE
        return LostJobPolicy.RETRY

    def job_retired(self) -> None:
        """The job watchdog retired this run (its row is failed already, in the same transaction):
        end it failed at its step, its replay aborted, with its audit event, counters and alert."""
        from recovery.drills.watchdog import drill_run_retired

        drill_run_retired(self)
