"""Broker writes."""

from __future__ import annotations

import os

from django.db import transaction

from recovery.audit.services import audit_record
from recovery.models import AuditAction, Broker, BrokerKind


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
        before = {b.name: _broker_snapshot(b) for b in Broker.objects.filter(name__in=[spec[0] for spec in specs])}
        for name, kind, endpoint, options, ref in specs:
            broker, _ = Broker.objects.update_or_create(
                name=name,
                defaults={"kind": kind, "endpoint": endpoint, "options": options, "credentials_ref": ref},
            )
            brokers.append(broker)
        audit_record(
            actor="seed_demo",
            action=AuditAction.BROKERS_CONFIGURED,
            summary=f"local brokers configured: {', '.join(b.name for b in brokers) or 'none'}",
            before=before,
            after={b.name: _broker_snapshot(b) for b in brokers},
        )
    return brokers


def _broker_snapshot(broker: Broker) -> dict[str, object]:
    """What the audit trail keeps of a broker: never a secret (only the credentials reference)."""
    return {
        "kind": broker.kind,
        "endpoint": broker.endpoint,
        "options": broker.options,
        "credentials_ref": broker.credentials_ref,
        "enabled": broker.enabled,
    }
