"""Scheduled recovery drills (issue 7): a drill, its standing approval, and its runs.

Invariants: 7 (four eyes: a drill's replay plan template is approved by an approver who is not
its author; the approval stores the drill's content hash and any change voids it; each run's
replay plan still goes through the replay services and is approved on the strength of that
standing approval), and the scheduler claims each slot once (a conditional UPDATE of
``next_run_at`` plus the unique (drill, slot) run row), so two schedulers never run it twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


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


class DrillRunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    REPLAYING = "replaying", "Replaying"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


DRILL_RUN_ACTIVE = (DrillRunState.QUEUED, DrillRunState.RUNNING, DrillRunState.REPLAYING)


class DrillStep(models.TextChoices):
    PROVISIONED = "provisioned", "Queue pair ready"
    INJECTED = "injected", "Injected"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"
    CAPTURED = "captured", "Captured"
    CLASSIFIED = "classified", "Classified"
    REPLAYED = "replayed", "Replayed"
    VERIFIED = "verified", "Verified"
    CLEANED_UP = "cleaned_up", "Cleaned up"


class DrillRun(models.Model):
    """One run of a drill. Created before its job is enqueued (the job queue only delivers it);
    a scheduled run is unique per (drill, slot). ``steps`` records each step with its start,
    duration and outcome; ``expectations`` each expected outcome with pass/fail; the run's own
    job(s) hold it with a lease (``lease_until``) so two deliveries never work on it at once."""

    drill = models.ForeignKey(Drill, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=16, choices=DrillTrigger.choices)
    slot = models.DateTimeField(null=True, blank=True, help_text="the scheduled time this run claimed")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    state = models.CharField(max_length=16, choices=DrillRunState.choices, default=DrillRunState.QUEUED)
    step = models.CharField(max_length=16, choices=DrillStep.choices, blank=True, help_text="the step under way")
    failed_step = models.CharField(max_length=16, choices=DrillStep.choices, blank=True)
    reason = models.TextField(blank=True, help_text="why it failed or was skipped")
    drill_hash = models.CharField(max_length=64, blank=True)
    approval = models.ForeignKey(DrillApproval, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    steps = models.JSONField(default=list, blank=True, help_text="[{step, started_at, seconds, ok, detail}]")
    expectations = models.JSONField(default=list, blank=True, help_text="[{name, expected, actual, ok}]")
    observations = models.JSONField(default=dict, blank=True, help_text="what the consumer saw, per sequence")
    letter_baseline = models.BigIntegerField(default=0, help_text="the DLQ's last letter id before the run")
    plan = models.ForeignKey("recovery.ReplayPlan", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    replay_run = models.ForeignKey(
        "recovery.ReplayRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
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

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["drill", "slot"], name="drill_run_once_per_slot")]
        indexes = [
            models.Index(fields=["drill", "-created_at"], name="drill_run_recent_idx"),
            models.Index(fields=["state"], name="drill_run_state_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of drill {self.drill_id} ({self.state})"

    @property
    def passed(self) -> bool:
        return self.state == DrillRunState.PASSED
