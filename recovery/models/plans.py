"""Replay plans, their frozen items and approvals, runs and their ledger (issue 6).

Invariants: 4 (at most one owner: ledger rows are leased with a fencing token), 7 (four eyes:
an approval stores the plan's content hash; any change voids it), and the ledger is where a
crashed run resumes from.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PlanState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    CANCELLED = "cancelled", "Cancelled"


class ReplayPlan(models.Model):
    """A replay plan. While a draft, ``selection`` describes which letters it covers (a letters
    filter, a fingerprint group or picked ids); submitting freezes it into plan items."""

    name = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plans")
    state = models.CharField(max_length=16, choices=PlanState.choices, default=PlanState.DRAFT)
    selection = models.JSONField(default=dict, blank=True)
    selection_summary = models.CharField(max_length=500, blank=True)
    # Target override: empty = each letter's resolved origin (or its DLQ's default replay target).
    target_broker = models.ForeignKey(
        "recovery.Broker", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    target_address = models.CharField(max_length=500, blank=True, help_text="queue URL, exchange or topic")
    target_routing_key = models.CharField(max_length=300, blank=True)
    include_held = models.BooleanField(default=False, help_text="replay poison/hold letters too (explicit override)")
    # Identity across plans (issue 15, invariant 12): letters replayed before are left out unless
    # the plan says, with a reason, to replay them again. Both are part of what approvers approve.
    replay_again = models.BooleanField(
        default=False, db_default=False, help_text="include letters an earlier plan already replayed"
    )
    replay_again_reason = models.TextField(blank=True, default="", db_default="")
    # Rate plan.
    rate_per_second = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=10)
    workers = models.PositiveIntegerField(default=1)
    canary_count = models.PositiveIntegerField(default=0, help_text="first N messages, then a verification window")
    canary_window_seconds = models.PositiveIntegerField(default=30)
    ramp_steps = models.JSONField(default=list, blank=True, help_text="percentages of the rate, e.g. [10, 50, 100]")
    ramp_interval_seconds = models.PositiveIntegerField(default=60)
    preconditions = models.JSONField(default=list, blank=True, help_text='[{"check": name, ...params}]')
    stop_conditions = models.JSONField(default=list, blank=True, help_text='[{"condition": name, ...params}]')
    verifications = models.JSONField(default=list, blank=True, help_text='[{"step": name, ...params}]')
    required_approvals = models.PositiveIntegerField(default=1)
    # Circuit breaker (issue 15, part 3; recovery.replay.breaker): 0 = off.
    breaker_cooldown_seconds = models.PositiveIntegerField(
        default=0, help_text="after a stop condition pauses a run: wait this long, then send one probe batch; 0 = off"
    )
    breaker_probe_size = models.PositiveIntegerField(default=5, help_text="letters in a circuit breaker's probe batch")
    content_hash = models.CharField(max_length=64, blank=True, help_text="hash of what approvers approve")
    submitted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class PlanItemState(models.TextChoices):
    INCLUDED = "included", "Included"
    EXCLUDED = "excluded", "Excluded"


class TargetSource(models.TextChoices):
    """Where a plan item's target came from (invariant 14; recovery.replay.targets)."""

    OVERRIDE = "override", "plan override"
    BROKER = "broker", "broker record"
    FRAMEWORK = "framework", "framework record"
    HEADERS = "headers", "from message headers"
    ORIGIN = "origin", "failure origin (captured before sources were recorded)"
    DLQ_DEFAULT = "dlq_default", "DLQ default"


class PlanItem(models.Model):
    """One letter of a submitted plan (frozen on submit) with its resolved target, or the reason
    it is excluded. ``replay_id`` is stable per plan and letter (invariant 3)."""

    plan = models.ForeignKey(ReplayPlan, on_delete=models.CASCADE, related_name="items")
    letter = models.ForeignKey("recovery.DeadLetter", on_delete=models.PROTECT, related_name="plan_items")
    state = models.CharField(max_length=16, choices=PlanItemState.choices)
    exclusion = models.CharField(max_length=200, blank=True)
    target = models.JSONField(default=dict, blank=True, help_text="broker id, address, routing key")
    target_source = models.CharField(
        max_length=16, choices=TargetSource.choices, blank=True, default="", db_default="",
        help_text="where the target came from: plan override, broker or framework record, message headers, DLQ default",
    )  # fmt: skip
    replay_id = models.CharField(max_length=64)
    # Order (invariant 13, recovery.replay.ordering): letters of one SQS FIFO message group, or of
    # one Kafka key within a source partition, share a group; the position is the letter's rank
    # in its group (1, 2, ...) by its place in the DLQ, over the plan's included and excluded items.
    ordering_group = models.CharField(max_length=64, blank=True, default="", db_default="")
    ordering_position = models.PositiveIntegerField(null=True, blank=True)
    replay_again = models.BooleanField(
        default=False, db_default=False, help_text="the letter had been replayed before this plan froze it"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "letter"], name="plan_item_once"),
            models.UniqueConstraint(fields=["replay_id"], name="plan_item_replay_id_unique"),
        ]
        indexes = [
            models.Index(fields=["plan", "state", "id"], name="plan_item_state_idx"),
            models.Index(
                fields=["plan", "ordering_group", "ordering_position"],
                name="plan_item_ordering_idx",
                condition=~models.Q(ordering_group=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan_id}/{self.letter_id} {self.state}"


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class PlanApproval(models.Model):
    """An approver's decision on one version of a plan (invariant 7): valid only while the plan's
    content hash equals ``content_hash``; a change to the plan voids it (``voided_at``)."""

    plan = models.ForeignKey(ReplayPlan, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    decision = models.CharField(max_length=16, choices=ApprovalDecision.choices)
    content_hash = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.decision} of plan {self.plan_id} by {self.approver_id}"


class PreconditionOverride(models.Model):
    """An admin's written decision to go ahead although one precondition fails (audited)."""

    plan = models.ForeignKey(ReplayPlan, on_delete=models.CASCADE, related_name="overrides")
    check_name = models.CharField(max_length=64)
    reason = models.TextField()
    admin = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"override of {self.check_name} on plan {self.plan_id}"


class RunState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    VERIFYING = "verifying", "Verifying"
    VERIFIED = "verified", "Verified"
    # Issue 15, part 3: published, but no evidence that the letters were processed (no verification
    # step, or the evidence could not be gathered). Never shown as verified (invariant 12).
    COMPLETED_NOT_VERIFIED = "completed_not_verified", "Completed, not verified"
    VERIFICATION_FAILED = "verification_failed", "Verification failed"
    STOPPED = "stopped", "Stopped by a stop condition"
    ABORTED = "aborted", "Aborted"
    FAILED = "failed", "Failed"


RUN_ACTIVE = (RunState.PENDING, RunState.RUNNING, RunState.PAUSED, RunState.VERIFYING)


class ReplayRun(models.Model):
    """One execution of an approved plan. Created before anything is enqueued; owns the ledger.
    ``control`` is what operators asked for (run/pause/abort); workers read it before each batch."""

    plan = models.ForeignKey(ReplayPlan, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=24, choices=RunState.choices, default=RunState.PENDING)
    control = models.CharField(max_length=16, default="run")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    plan_hash = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    published = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    redeadlettered = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=32, blank=True, help_text="canary, canary-window, ramp-N, full, verify")
    phase_started_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.TextField(blank=True)
    verification = models.JSONField(default=list, blank=True, help_text="evidence of each verification step")
    # Issue 15, parts 3 and 8 (recovery.replay.evidence, recovery.replay.breaker).
    resent = models.PositiveIntegerField(default=0, help_text="published again after a worker's lease expired")
    baseline = models.JSONField(default=dict, blank=True, help_text="target depths read when the run started")
    breaker = models.JSONField(default=dict, blank=True, help_text="circuit breaker: state, opened_at, probes")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="run_state_idx")]

    def __str__(self) -> str:
        return f"run {self.pk} of plan {self.plan_id} ({self.state})"


class AttemptState(models.TextChoices):
    PENDING = "pending", "Pending"
    # Shown, not stored: a claimed row stays pending while a worker holds its lease
    # (lease_expires_at set), so claiming it changes no indexed column (see LedgerEntry).
    LEASED = "leased", "Leased"
    PUBLISHED = "published", "Published"
    VERIFIED = "verified", "Verified"
    REDEADLETTERED = "redeadlettered", "Came back to the DLQ"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Not sent: its letter was discarded after the plan was frozen"
    # Shown, not stored: a pending row of an ordered group waiting for the letter before it
    # (recovery.replay.ordering): it carries the ORDER_HELD lease, which never expires.
    HELD = "held", "Held behind the letter before it in its group"


# A pending row held by its ordered group (recovery.replay.ordering) rather than by a worker.
ORDER_HELD = "order:held"
HELD_ROWS = models.Q(state=AttemptState.PENDING, lease_owner=ORDER_HELD)
# The ledger rows a worker holds (or held, if its lease expired and nobody claimed them again).
LEASED_ROWS = models.Q(state=AttemptState.PENDING, lease_expires_at__isnull=False) & ~models.Q(lease_owner=ORDER_HELD)


class LedgerEntry(models.Model):
    """One (run, letter) attempt (invariant 4): claimed with a lease and a fencing token by a
    conditional UPDATE; an outcome is recorded only by the holder of the current token.

    A claim leaves ``state`` pending and sets the lease (``lease_owner``, ``lease_expires_at``, a
    new ``fencing_token``): none of those is indexed, so with the table's free page space (fillfactor
    50, migration 0012) the claim is a HOT update that writes no index entry. A row is leased while
    it is pending with a lease (``lease_expires_at`` set); the claim skips those whose lease has not
    expired. Recording moves it to published or failed (or back to pending without a lease)."""

    # No database constraints (migrations 0013, 0014), and run has no index of its own: the
    # (run, letter) unique constraint and the (run, state, id) index lead with run_id, and every
    # index costs each insert and each UPDATE that is not HOT. run_start writes the rows in one
    # INSERT ... SELECT from the plan's items, in the transaction that creates the run and under the
    # plan's row lock, so every row points at an existing run, item and letter; Django enforces
    # CASCADE and PROTECT. A constraint cost a deferred check per row at COMMIT: with three, a
    # 20,000-row ledger took 230 ms to commit, a third of a 20,000-letter replay to Kafka.
    run = models.ForeignKey(
        ReplayRun, on_delete=models.CASCADE, related_name="ledger", db_index=False, db_constraint=False
    )
    item = models.ForeignKey(PlanItem, on_delete=models.PROTECT, related_name="+", db_constraint=False)
    letter = models.ForeignKey("recovery.DeadLetter", on_delete=models.PROTECT, related_name="+", db_constraint=False)
    state = models.CharField(max_length=16, choices=AttemptState.choices, default=AttemptState.PENDING)
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    fencing_token = models.PositiveBigIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    published_at = models.DateTimeField(null=True, blank=True)
    broker_message_id = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    # Claimed again after its holder's lease expired without an outcome (a lost worker): its next
    # publish is a re-send (issue 15, part 8). Not indexed, so setting it keeps the claim HOT.
    resent = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "letter"], name="ledger_once_per_run_letter")]
        indexes = [models.Index(fields=["run", "state", "id"], name="ledger_run_state_idx")]

    def __str__(self) -> str:
        return f"run {self.run_id} letter {self.letter_id} {self.state}"


class RunEvent(models.Model):
    """The run's event log shown on its page: phase changes, controls, stop conditions, errors."""

    run = models.ForeignKey(ReplayRun, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=32)
    message = models.CharField(max_length=1000)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"
