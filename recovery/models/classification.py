"""Classification and triage: rules, fingerprint groups, runbooks, and the record of triage jobs
and bulk actions (issue 5)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from recovery.models.jobs import BackgroundJob, LostJobPolicy


class Category(models.TextChoices):
    TRANSIENT = "transient", "Transient"
    POISON = "poison", "Poison"
    SCHEMA = "schema", "Schema"
    BUSINESS = "business", "Business"
    DUPLICATE = "duplicate", "Duplicate"
    EXPIRED = "expired", "Expired"
    UNKNOWN = "unknown", "Unknown"


class Disposition(models.TextChoices):
    REPLAY = "replay", "Replay"
    HOLD = "hold", "Hold"
    DISCARD = "discard", "Discard"


class ClassificationSource(models.TextChoices):
    NONE = "", "Not classified yet"
    RULE = "rule", "A rule matched"
    DEFAULT = "default", "No rule matched"
    DUPLICATE = "duplicate", "Duplicate of an earlier letter"
    MANUAL = "manual", "Set by an operator"


class Runbook(models.Model):
    """What a failure means, who owns it, whether and how to replay it. Attached to rules and
    fingerprint groups; shown on every letter, group and plan it covers. Edits are audited."""

    title = models.CharField(max_length=200)
    owner = models.CharField(max_length=200, blank=True, help_text="team or person who owns this failure")
    body = models.TextField(blank=True, help_text="markdown")
    links = models.JSONField(default=list, blank=True, help_text='[{"title": ..., "url": ...}]')
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class ClassificationRule(models.Model):
    """One ordered rule: all its conditions must hold (recovery.classification.rules evaluates
    them); the first enabled rule that matches gives the letter its category and disposition."""

    position = models.PositiveIntegerField(help_text="rules are tried in ascending position")
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    conditions = models.JSONField(default=list, blank=True, help_text="list of conditions, all must hold")
    category = models.CharField(max_length=16, choices=Category.choices)
    disposition = models.CharField(max_length=16, choices=Disposition.choices)
    runbook = models.ForeignKey(Runbook, null=True, blank=True, on_delete=models.SET_NULL, related_name="rules")
    shipped = models.BooleanField(default=False, help_text="part of the default rule set")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class FingerprintGroup(models.Model):
    """All letters sharing one fingerprint (recovery.classification.fingerprint). Counters are
    maintained as letters are classified, so the groups page never aggregates millions of rows."""

    fingerprint = models.CharField(max_length=64, unique=True)
    error_class = models.CharField(max_length=300, blank=True)
    message_pattern = models.TextField(blank=True, help_text="the error message with variable parts stripped")
    origin = models.CharField(max_length=500, blank=True)
    letter_count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    dlq_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    sample = models.ForeignKey(
        "recovery.DeadLetter", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    runbook = models.ForeignKey(Runbook, null=True, blank=True, on_delete=models.SET_NULL, related_name="groups")
    reopened_at = models.DateTimeField(
        null=True, blank=True, help_text="when a replayed letter of the group last came back to a DLQ"
    )

    class Meta:
        ordering = ["-last_seen"]
        indexes = [models.Index(fields=["-letter_count"], name="group_count_idx")]

    def __str__(self) -> str:
        return f"{self.error_class or 'unknown error'} ({self.fingerprint[:12]})"


class TriageJobKind(models.TextChoices):
    RECLASSIFY = "reclassify", "Re-classify after a rule change"
    BULK = "bulk", "Bulk action on a filter result"


class TriageJob(BackgroundJob):
    """A long triage job (re-classification, a bulk action over a large filter result): the row
    is created before the job is enqueued and carries its progress for the console. Both kinds
    continue from their checkpoint when delivered again, so the watchdog retries a lost one."""

    lost_policy = LostJobPolicy.RETRY

    kind = models.CharField(max_length=16, choices=TriageJobKind.choices)
    params = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    changed = models.PositiveBigIntegerField(default=0)

    class Meta(BackgroundJob.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def job_name(self) -> str:  # type: ignore[override]
        return "reclassify" if self.kind == TriageJobKind.RECLASSIFY else "triage_bulk"


class TriageActionKind(models.TextChoices):
    SET_CATEGORY = "set_category", "Set category"
    SET_DISPOSITION = "set_disposition", "Set disposition"
    HOLD = "hold", "Hold"
    DISCARD = "discard", "Discard"


class TriageAction(models.Model):
    """One operator action on a set of letters (picked, or a whole filter result). Its letters
    are listed in TriageActionItem so each letter's timeline shows it; the audit event records
    who, what and why."""

    kind = models.CharField(max_length=20, choices=TriageActionKind.choices)
    value = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    selection = models.JSONField(default=dict, blank=True, help_text="the filter or the picked ids")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_name = models.CharField(max_length=150)
    letter_count = models.PositiveBigIntegerField(default=0)
    job = models.ForeignKey(TriageJob, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.letter_count} letters"


class TriageActionItem(models.Model):
    action = models.ForeignKey(TriageAction, on_delete=models.CASCADE, related_name="items")
    letter = models.ForeignKey("recovery.DeadLetter", on_delete=models.CASCADE, related_name="triage_items")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["letter", "action"], name="triage_item_once")]

    def __str__(self) -> str:
        return f"letter {self.letter_id} in triage action {self.action_id}"
