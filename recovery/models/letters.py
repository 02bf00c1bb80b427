from __future__ import annotations

from django.conf import settings
from django.db import models

from recovery.brokers.base import DlqAddress
from recovery.models.brokers import Broker, BrokerKind


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
    CAPTURED = "captured", "Captured"
    OVERSIZE = "oversize", "Oversize: metadata only, message left on the broker"


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

    class Meta:
        ordering = ["-captured_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["dlq", "identity"], name="dead_letter_once_per_identity")]
        indexes = [models.Index(fields=["dlq", "-captured_at"], name="letter_dlq_recent_idx")]

    def __str__(self) -> str:
        return f"{self.dlq}:{self.identity}"


class CapturePassState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class CaptureTrigger(models.TextChoices):
    SCHEDULER = "scheduler", "Scheduler"
    MANUAL = "manual", "Capture now"
    CLI = "cli", "Command line"


class CapturePass(models.Model):
    """One capture run over a DLQ; the row is the job's state (created before the job is
    enqueued) and its record: counts, retries with backoff, and the error if it failed."""

    dlq = models.ForeignKey(DeadLetterQueue, on_delete=models.PROTECT, related_name="passes")
    trigger = models.CharField(max_length=16, choices=CaptureTrigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    state = models.CharField(max_length=16, choices=CapturePassState.choices, default=CapturePassState.QUEUED)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    received = models.PositiveIntegerField(default=0)
    captured = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    oversize = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True, help_text="retries and notable events, oldest first")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["dlq", "state"], name="capture_pass_dlq_state_idx")]

    def __str__(self) -> str:
        return f"capture pass {self.pk} of {self.dlq} ({self.state})"
