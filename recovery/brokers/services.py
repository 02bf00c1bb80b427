"""Broker writes."""

from __future__ import annotations

import os

from django.db import transaction

from recovery.models import Broker, BrokerKind


def local_brokers_configure() -> list[Broker]:
    """Create or refresh one Broker per local service named in the environment (LOCAL_* variables
    written by scripts/services.sh). Credentials are referenced by env prefix, never copied."""
    specs = []
    if os.environ.get("LOCAL_RABBITMQ_URL"):
        specs.append(
            (
                "local-rabbitmq",
                BrokerKind.RABBITMQ,
                os.environ["LOCAL_RABBITMQ_URL"],
                {"management_url": os.environ.get("LOCAL_RABBITMQ_MANAGEMENT_URL", "")},
                "env:LOCAL_RABBITMQ",
            )
        )
    if os.environ.get("LOCAL_KAFKA_BOOTSTRAP_SERVERS"):
        specs.append(("local-kafka", BrokerKind.KAFKA, os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"], {}, ""))
    if os.environ.get("LOCAL_SQS_ENDPOINT_URL"):
        specs.append(
            (
                "local-sqs",
                BrokerKind.SQS,
                os.environ["LOCAL_SQS_ENDPOINT_URL"],
                {"region": os.environ.get("LOCAL_SQS_REGION", "us-east-1")},
                "env:LOCAL_SQS",
            )
        )
    brokers = []
    with transaction.atomic():
        for name, kind, endpoint, options, ref in specs:
            broker, _ = Broker.objects.update_or_create(
                name=name,
                defaults={"kind": kind, "endpoint": endpoint, "options": options, "credentials_ref": ref},
            )
            brokers.append(broker)
    return brokers
