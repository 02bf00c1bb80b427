from __future__ import annotations

from django.conf import settings
from django.db import models

from recovery.models.jobs import BackgroundJob, LostJobPolicy


class AuditAction(models.TextChoices):
    LOGIN = "auth.login", "Signed in"
    LOGOUT = "auth.logout", "Signed out"
    LOGIN_FAILED = "auth.login_failed", "Sign-in refused"
    USER_ROLES_CHANGED = "user.roles_changed", "Roles changed"
    DEMO_USERS_SEEDED = "user.demo_seeded", "Demo users seeded"
    BROKERS_CONFIGURED = "broker.configured", "Brokers configured"
    BROKER_CREATED = "broker.created", "Broker added"
    BROKER_UPDATED = "broker.updated", "Broker changed"
    DLQ_CREATED = "dlq.created", "Dead-letter queue added"
    DLQ_UPDATED = "dlq.updated", "Dead-letter queue changed"
    CAPTURE_REQUESTED = "capture.requested", "Capture requested"
    CAPTURE_SCHEDULED = "capture.scheduled", "Capture passes scheduled"
    CAPTURE_FINISHED = "capture.finished", "Capture pass finished"
    AUDIT_EXPORTED = "audit.exported", "Audit trail exported"
    AUDIT_VERIFY_REQUESTED = "audit.verify_requested", "Chain verification requested"
    AUDIT_VERIFIED = "audit.verified", "Chain verification finished"
    RULE_CREATED = "rule.created", "Classification rule added"
    RULE_UPDATED = "rule.updated", "Classification rule changed"
    RULE_DELETED = "rule.deleted", "Classification rule deleted"
    RULES_REORDERED = "rule.reordered", "Classification rules reordered"
    RULES_SEEDED = "rule.seeded", "Default rule set installed"
    RECLASSIFY_REQUESTED = "classify.requested", "Re-classification requested"
    RECLASSIFY_FINISHED = "classify.finished", "Re-classification finished"
    LETTERS_TRIAGED = "letters.triaged", "Letters triaged"
    LETTER_BODY_DOWNLOADED = "letter.body_downloaded", "Letter body downloaded"
    RUNBOOK_CREATED = "runbook.created", "Runbook added"
    RUNBOOK_UPDATED = "runbook.updated", "Runbook changed"
    RUNBOOK_ATTACHED = "runbook.attached", "Runbook attached"
    DLQ_MASKS_UPDATED = "dlq.masks_updated", "Masks changed"
    PLAN_CREATED = "plan.created", "Replay plan drafted"
    PLAN_UPDATED = "plan.updated", "Replay plan changed"
    PLAN_SUBMITTED = "plan.submitted", "Replay plan submitted"
    PLAN_APPROVED = "plan.approved", "Replay plan approved"
    PLAN_REJECTED = "plan.rejected", "Replay plan rejected"
    PLAN_APPROVALS_VOIDED = "plan.approvals_voided", "Approvals voided by a change"
    PLAN_CANCELLED = "plan.cancelled", "Replay plan cancelled"
    PRECONDITION_OVERRIDDEN = "plan.precondition_overridden", "Precondition overridden"
    RUN_STARTED = "run.started", "Replay run started"
    RUN_PAUSED = "run.paused", "Replay run paused"
    RUN_RESUMED = "run.resumed", "Replay run resumed"
    RUN_ABORTED = "run.aborted", "Replay run aborted"
    RUN_STOPPED = "run.stopped", "Replay run stopped by a stop condition"
    RUN_FINISHED = "run.finished", "Replay run finished"
    RUN_LEDGER_EXPORTED = "run.ledger_exported", "Replay run ledger exported"
    RUN_ORDER_BLOCKED = "run.order_blocked", "Replay run paused: ordered groups blocked"
    RUN_ORDER_RELEASED = "run.order_released", "Ordered groups released"
    LETTERS_REPLAYED = "letters.replayed", "Letters replayed (published, confirmed)"
    LETTERS_RESOLVED = "letters.resolved", "Letters resolved (replay verified)"
    LETTERS_RETURNED = "letters.returned", "Replayed letters came back to a DLQ"
    DRILL_CREATED = "drill.created", "Drill defined"
    DRILL_UPDATED = "drill.updated", "Drill changed"
    DRILL_APPROVED = "drill.approved", "Drill approved"
    DRILL_RUN_REQUESTED = "drill.run_requested", "Drill run requested"
    DRILL_RUNS_SCHEDULED = "drill.scheduled", "Drill runs scheduled"
    DRILL_PROVISIONED = "drill.provisioned", "Drill queue pair provisioned"
    DRILL_PLAN_APPROVED = "drill.plan_approved", "Drill run's plan approved by the standing approval"
    DRILL_RUN_FINISHED = "drill.run_finished", "Drill run finished"


class AuditEvent(models.Model):
    """One append-only, hash-chained record of who did what to which object, and why.

    Invariant 8: written only by recovery.audit.services.audit_record inside the transaction of
    the change it records; a database trigger refuses UPDATE, DELETE and TRUNCATE (migration
    0004); ``hash`` is SHA-256 over the canonical JSON of the event including ``prev_hash``, so
    recovery.audit.verification detects any edited, deleted, inserted or reordered event.
    """

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)
    # PROTECT: a user with audit history is deactivated, never deleted (deleting would have to
    # rewrite the append-only rows).
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_name = models.CharField(max_length=150, help_text="username snapshot, or system:<name>")
    client_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    trace_id = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices, db_index=True)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    summary = models.CharField(max_length=500)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "seq"], name="audit_object_idx"),
            models.Index(fields=["actor_name", "seq"], name="audit_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_name}"


class AuditCheckpoint(models.Model):
    """A signed statement that the chain's head was ``head_hash`` at ``seq``: HMAC-SHA-256 with a
    key held outside the database (AUDIT_HMAC_KEY), so even a rewrite that recomputes every
    hash is caught at the next checkpoint. Append-only like the events."""

    seq = models.BigIntegerField(db_index=True)
    head_hash = models.CharField(max_length=64)
    at = models.DateTimeField()
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"


class VerificationOutcome(models.TextChoices):
    PASSED = "passed", "Chain intact"
    BROKEN = "broken", "Chain broken"


class AuditVerification(BackgroundJob):
    """One run of the chain verifier started from the console; the row is the job's state
    (created before the job is enqueued, updated by the worker). The job's state says whether the
    verifier finished; ``outcome`` says what it found. Verifying again from the start is
    harmless, so the watchdog retries a lost one."""

    job_name = "audit_verify"
    lost_policy = LostJobPolicy.RETRY

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    requested_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=VerificationOutcome.choices, blank=True)
    head_seq = models.BigIntegerField(null=True, blank=True)
    checkpoints_checked = models.IntegerField(default=0)
    first_broken_seq = models.BigIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)

    class Meta(BackgroundJob.Meta):
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"verification {self.pk} ({self.status})"

    @property
    def status(self) -> str:
        """What the console shows: the outcome once the verifier finished, else the job's state."""
        return self.outcome or self.state

    @property
    def status_display(self) -> str:
        return self.get_outcome_display() if self.outcome else self.get_state_display()
