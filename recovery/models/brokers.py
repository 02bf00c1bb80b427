from __future__ import annotations

from django.db import models

from recovery.brokers.credentials import validate_credentials_ref


class BrokerKind(models.TextChoices):
    SQS = "sqs", "Amazon SQS"
    RABBITMQ = "rabbitmq", "RabbitMQ"
    KAFKA = "kafka", "Kafka"


class Broker(models.Model):
    """A configured connection to one broker.

    Invariant 9 (no secret in the database): ``credentials_ref`` only names where credentials
    live (``env:PREFIX`` or ``file:/path``); the secret itself is read at connect time by
    recovery.brokers.credentials and never stored, logged or rendered.
    """

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=BrokerKind.choices)
    endpoint = models.CharField(
        max_length=500,
        help_text="SQS endpoint URL (blank for AWS), AMQP URL without password, or Kafka bootstrap servers",
        blank=True,
    )
    options = models.JSONField(default=dict, blank=True, help_text="Non-secret client options")
    credentials_ref = models.CharField(
        max_length=300,
        blank=True,
        validators=[validate_credentials_ref],
        help_text="env:PREFIX or file:/path/to/secret.json; blank for none or the ambient chain",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"
