from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.utils import timezone

from recovery.brokers.base import DlqAddress
from recovery.models.brokers import Broker, BrokerKind
from recovery.models.classification import Category, ClassificationSource, Disposition
from recovery.models.jobs import BackgroundJob, JobState, LostJobPolicy


class CaptureMode(models.TextChoices):
    DRAIN = "drain", "Drain: delete/ack each message once its row is committed"
    OFFSETS = "offsets", "Offsets: commit the console's consumer group past each captured message"


class DeadLetterQueue(models.Model):
    """One queue/topic on a broker that receives dead letters, with its default replay target
    and how the console captures it."""

    broker = models.ForeignKey(Broker, on_delete=models.PROTECT, related_name="dlqs")
    name = models.SlugField(max_length=64, unique=True, help_text="short name used in the console and commands")
    address = models.CharField(max_length=500, help_text="SQS queue URL, RabbitMQ queue name or Kafka topic")
    vhost = models.CharField(
        max_length=200, blank=True, help_text="RabbitMQ virtual host (blank = the one in the broker's URL)"
    )
    consumer_group = models.CharField(
        max_length=200, blank=True, help_text="Kafka consumer group the console captures with"
    )
    replay_target = models.CharField(
        max_length=500, blank=True, help_text="default target: SQS queue URL, RabbitMQ exchange, Kafka topic"
    )
    replay_routing_key = models.CharField(max_length=300, blank=True, help_text="RabbitMQ routing key")
    capture_mode = models.CharField(max_length=16, choices=CaptureMode.choices, default=CaptureMode.DRAIN)
    capture_interval = models.PositiveIntegerField(
        default=60, help_text="seconds between scheduled capture passes; 0 = only on demand"
    )
    capture_batch_size = models.PositiveIntegerField(default=100)
    sources = models.JSONField(
        default=list, blank=True, help_text="queues/topics that feed this DLQ (from redrive policies or discovery)"
    )
    header_mapping = models.JSONField(
        default=dict, blank=True, help_text='application error headers, e.g. {"error_class": "x-exception-class"}'
    )
    retention_seconds = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="how long the broker keeps a message (SQS MessageRetentionPeriod, RabbitMQ x-message-ttl, "
        "Kafka retention.ms), read from the broker; empty: unknown or unlimited",
    )
    mask_json_paths = models.JSONField(
        default=list, blank=True, help_text='body JSON paths to mask, e.g. ["$.customer.email", "$.items[*].card"]'
    )
    mask_headers = models.JSONField(default=list, blank=True, help_text="header names whose values are masked")
    mask_emails = models.BooleanField(default=True, help_text="mask e-mail addresses anywhere in bodies and headers")
    mask_card_numbers = models.BooleanField(
        default=True, help_text="mask card numbers (13-19 digits passing the Luhn check) in bodies and headers"
    )
    replay_schema = models.JSONField(
        null=True, blank=True, help_text="optional JSON Schema every body must satisfy before it is replayed"
    )
    enabled = models.BooleanField(default=True)
    next_capture_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "dead-letter queue"

    def __str__(self) -> str:
        return self.name

    def as_address(self) -> DlqAddress:
        return DlqAddress(name=self.address, vhost=self.vhost, group=self.consumer_group)

    @property
    def kind(self) -> str:
        return self.broker.kind

    def default_capture_mode(self) -> str:
        return CaptureMode.OFFSETS if self.broker.kind == BrokerKind.KAFKA else CaptureMode.DRAIN


class DeadLetterState(models.TextChoices):
    """The letter lifecycle (issue 15, docs/replay.md "Letter lifecycle"): captured (open) ->
    held / discarded (triage) -> in a plan -> replaying -> replayed -> resolved or returned.
    Every move is made by recovery.letters.lifecycle, called from the service that causes it."""

    CAPTURED = "captured", "Captured (open)"
    OVERSIZE = "oversize", "Oversize: body parked in object storage (or, until it is, left on the broker)"
    HELD = "held", "Held by triage"
    DISCARDED = "discarded", "Discarded by an operator (kept, never replayed)"
    PLANNED = "planned", "In a plan"
    REPLAYING = "replaying", "Replaying"
    REPLAYED = "replayed", "Replayed (published, broker confirmed)"
    RESOLVED = "resolved", "Resolved (replay verified)"
    RETURNED = "returned", "Returned (came back to a DLQ)"


# Work someone still has to decide on: what lists, groups, the overview and the DLQ page show by
# default. The partial indexes below cover exactly these states.
OPEN_STATES = (DeadLetterState.CAPTURED, DeadLetterState.OVERSIZE)
# On its way: frozen into a plan, being sent, or sent and waiting for verification.
IN_PROGRESS_STATES = (DeadLetterState.PLANNED, DeadLetterState.REPLAYING, DeadLetterState.REPLAYED)
# A replay of the letter was published at least once (identity across plans, invariant 12).
ALREADY_REPLAYED_STATES = (DeadLetterState.REPLAYED, DeadLetterState.RESOLVED, DeadLetterState.RETURNED)
_OPEN = models.Q(state__in=[s.value for s in OPEN_STATES])


class DeadLetter(models.Model):
    """One captured message: its bytes, headers and properties as the broker gave them, its
    broker identity, and its failure normalised into one shape (recovery.metadata).

    Invariant 1: unique on (dlq, identity), so capturing the same broker message twice yields
    one row (``times_seen`` counts the deliveries). Invariant 10: any bytes are stored as they
    are; pages escape and truncate them.
    """

    dlq = models.ForeignKey(DeadLetterQueue, on_delete=models.PROTECT, related_name="letters")
    capture_pass = models.ForeignKey("recovery.CapturePass", null=True, blank=True, on_delete=models.SET_NULL)
    identity = models.CharField(max_length=400)
    body = models.BinaryField(blank=True)
    body_size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=200, blank=True)
    content_hash = models.CharField(max_length=64, help_text="SHA-256 of the body")
    headers = models.JSONField(default=dict, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    captured_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=DeadLetterState.choices, default=DeadLetterState.CAPTURED)
    times_seen = models.PositiveIntegerField(default=1)
    removed_at = models.DateTimeField(
        null=True, blank=True, help_text="when the broker confirmed its removal (delete/ack/commit); empty: still there"
    )
    origin = models.CharField(max_length=500, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    error_class = models.CharField(max_length=300, blank=True)
    error_message = models.TextField(blank=True)
    stack_trace = models.TextField(blank=True)
    attempt_count = models.PositiveIntegerField(null=True, blank=True)
    first_failed_at = models.DateTimeField(null=True, blank=True)
    last_failed_at = models.DateTimeField(null=True, blank=True)
    source_message_id = models.CharField(max_length=300, blank=True)
    failure_extras = models.JSONField(default=dict, blank=True)
    # Classification (issue 5): set by recovery.classification after capture, by rules or by hand.
    # db_default: the capture upsert (recovery.capture.store) names its columns and leaves these out.
    fingerprint = models.CharField(max_length=64, blank=True, default="", db_default="")
    category = models.CharField(
        max_length=16, choices=Category.choices, default=Category.UNKNOWN, db_default=Category.UNKNOWN.value
    )
    disposition = models.CharField(
        max_length=16, choices=Disposition.choices, default=Disposition.HOLD, db_default=Disposition.HOLD.value
    )
    classified_by = models.CharField(
        max_length=16, choices=ClassificationSource.choices, blank=True, default="", db_default=""
    )
    rule = models.ForeignKey(
        "recovery.ClassificationRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="letters"
    )
    classified_at = models.DateTimeField(null=True, blank=True)
    duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    duplicate_key = models.CharField(
        max_length=64, blank=True, default="", db_default="",
        help_text="names the message this letter is a delivery of (recovery.classification.duplicates); empty: unknown",
    )  # fmt: skip
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="when the broker would drop the original message (retention/TTL)"
    )
    search_text = models.TextField(
        blank=True,
        default="",
        db_default="",
        help_text="error class, message and the start of a text body, lower-cased: what the letters search reads",
    )
    replay_id = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        help_text="x-replay-id header: a replayed message that came back",
    )
    discarded_at = models.DateTimeField(null=True, blank=True)
    discard_reason = models.TextField(blank=True, default="", db_default="")
    # Capture completeness and oversize parking (issue 15, part 7; recovery/capture/parking.py).
    position = models.DecimalField(
        max_digits=40,
        decimal_places=0,
        null=True,
        blank=True,
        help_text="its place in the DLQ, in the broker's order: the SQS FIFO SequenceNumber, the Kafka offset "
        "(within its partition), else the order capture read it in (a console-wide sequence)",
    )
    parked_bucket = models.CharField(
        max_length=255, blank=True, default="", db_default="", help_text="oversize: the bucket holding its body"
    )
    parked_key = models.CharField(
        max_length=1024, blank=True, default="", db_default="", help_text="oversize: the object key of its body"
    )
    # Letter lifecycle (issue 15). db_default: the capture upsert names its columns.
    state_changed_at = models.DateTimeField(null=True, blank=True, help_text="when ``state`` last changed")
    state_before_plan = models.CharField(
        max_length=16, blank=True, default="", db_default="",
        help_text="the state a letter had when a plan took it; it goes back there if the plan does not send it",
    )  # fmt: skip
    returned_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="returns",
        help_text="the replayed letter this one is: it came back to a DLQ carrying that replay's x-replay-id",
    )  # fmt: skip

    class Meta:
        ordering = ["-captured_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["dlq", "identity"], name="dead_letter_once_per_identity")]
        indexes = [
            models.Index(fields=["dlq", "-captured_at"], name="letter_dlq_recent_idx"),
            models.Index(fields=["-captured_at", "-id"], name="letter_recent_idx"),
            models.Index(fields=["fingerprint", "captured_at"], name="letter_fingerprint_idx"),
            models.Index(fields=["category", "-captured_at"], name="letter_category_idx"),
            models.Index(fields=["expires_at"], name="letter_expiry_idx", condition=models.Q(expires_at__isnull=False)),
            # duplicates: the first delivery of the same message (recovery.classification.store)
            models.Index(
                fields=["duplicate_key", "id"], name="letter_duplicate_key_idx", condition=~models.Q(duplicate_key="")
            ),
            models.Index(fields=["replay_id"], name="letter_replay_id_idx", condition=~models.Q(replay_id="")),
            models.Index(fields=["id"], name="letter_unclassified_idx", condition=models.Q(classified_by="")),
            GinIndex(fields=["search_text"], name="letter_search_trgm_idx", opclasses=["gin_trgm_ops"]),
            # Open work (OPEN_STATES): the default of the letters list, the DLQ page, the overview and
            # the groups page; small, as an emptied inbox holds few rows whatever the table's size.
            models.Index(fields=["-captured_at", "-id"], name="letter_open_recent_idx", condition=_OPEN),
            models.Index(fields=["dlq", "-captured_at"], name="letter_open_dlq_idx", condition=_OPEN),
            models.Index(fields=["fingerprint"], name="letter_open_fingerprint_idx", condition=_OPEN),
        ]

    def __str__(self) -> str:
        return f"{self.dlq}:{self.identity}"


class CaptureTrigger(models.TextChoices):
    SCHEDULER = "scheduler", "Scheduler"
    MANUAL = "manual", "Capture now"
    CLI = "cli", "Command line"


class CapturePass(BackgroundJob):
    """One capture run over a DLQ; the row is the job's state (created before the job is
    enqueued) and its record: counts, retries with backoff, and the error if it failed. A pass
    whose job was lost is retired by the job watchdog and its DLQ made due again, so a lost job
    never blocks capture while the messages age out on the broker."""

    job_name = "capture_dlq"
    lost_policy = LostJobPolicy.RETIRE

    dlq = models.ForeignKey(DeadLetterQueue, on_delete=models.PROTECT, related_name="passes")
    trigger = models.CharField(max_length=16, choices=CaptureTrigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    received = models.PositiveIntegerField(default=0)
    captured = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    oversize = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(
        default=0, help_text="broker attempts within this pass (retries with backoff)"
    )
    remaining = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="messages the broker still held in the DLQ when the pass ended (its depth); empty: not read",
    )
    limit_reached = models.BooleanField(
        default=False, help_text="the pass stopped at its limit (RECOVERY_CAPTURE_MAX_PER_PASS or --max)"
    )

    class Meta(BackgroundJob.Meta):
        ordering = ["-created_at"]
        indexes = [
            *BackgroundJob.Meta.indexes,
            models.Index(fields=["dlq", "state"], name="capture_pass_dlq_state_idx"),
        ]

    def __str__(self) -> str:
        return f"capture pass {self.pk} of {self.dlq} ({self.state})"

    @property
    def outcome(self) -> str:
        """What the pass lists show: a pass that succeeded with messages left on the DLQ says how
        many remain, never just "Succeeded" (issue 15, part 7)."""
        if self.state == JobState.SUCCEEDED and self.remaining:
            return f"{self.remaining:,} remain" + (" (limit reached)" if self.limit_reached else "")
        return self.get_state_display()

    def job_retired(self) -> None:
        """Its job was lost and the watchdog retired it: the DLQ is due at once, so the next
        scheduler tick captures it with a fresh pass."""
        DeadLetterQueue.objects.filter(pk=self.dlq_id).update(next_capture_at=timezone.now())
