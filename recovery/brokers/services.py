"""Broker writes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model

from recovery.audit.services import audit_record
from recovery.errors import InvalidInput
from recovery.models import AuditAction, Broker, BrokerKind, CaptureMode, DeadLetterQueue
from recovery.permissions import Capability, ensure_can


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


BROKER_FIELDS = ("name", "kind", "endpoint", "options", "credentials_ref", "enabled")
DLQ_FIELDS = (
    "broker", "name", "address", "vhost", "consumer_group", "replay_target", "replay_routing_key", "capture_mode",
    "capture_interval", "capture_batch_size", "sources", "header_mapping", "enabled",
)  # fmt: skip


def _snapshot(obj: object, fields: tuple[str, ...]) -> dict[str, object]:
    return {f: (getattr(obj, f"{f}_id") if f == "broker" else getattr(obj, f)) for f in fields}


def broker_save(*, actor: object, broker: Broker | None = None, data: dict[str, object]) -> Broker:
    """Create a broker (``broker`` None) or change one; admins only. Validates like the form
    (credentials only as a reference, invariant 9) and audits before/after."""
    return _save_audited(
        actor=actor, existing=broker, new=Broker, fields=BROKER_FIELDS, data=data, label="broker",
        actions=(AuditAction.BROKER_CREATED, AuditAction.BROKER_UPDATED),
    )  # fmt: skip


def dlq_save(*, actor: object, dlq: DeadLetterQueue | None = None, data: dict[str, object]) -> DeadLetterQueue:
    """Create or change a dead-letter queue; admins only; audited with before/after."""

    def prepare(target: DeadLetterQueue) -> None:
        if target.broker_id and not data.get("capture_mode") and dlq is None:
            target.capture_mode = target.default_capture_mode()

    return _save_audited(
        actor=actor, existing=dlq, new=DeadLetterQueue, fields=DLQ_FIELDS, data=data, label="dead-letter queue",
        actions=(AuditAction.DLQ_CREATED, AuditAction.DLQ_UPDATED), prepare=prepare, check=_check_dlq,
    )  # fmt: skip


def _save_audited(
    *,
    actor: object,
    existing: Model | None,
    new: type[Model],
    fields: tuple[str, ...],
    data: dict[str, object],
    label: str,
    actions: tuple[AuditAction, AuditAction],
    prepare: Callable[[Any], None] | None = None,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """Apply ``data`` to ``existing`` (or a new ``new()``), validate, save and audit, in one
    transaction; admins only."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        before = _snapshot(existing, fields) if existing else None
        target = existing or new()
        for field in fields:
            if field in data:
                setattr(target, field, data[field])
        if prepare:
            prepare(target)
        _validate(target)
        if check:
            check(target)
        target.save()
        audit_record(
            actor=actor,
            action=actions[1] if existing else actions[0],
            obj=target,
            summary=f"{label} {target.name} {'changed' if existing else 'added'}",
            before=before,
            after=_snapshot(target, fields),
        )
    return target


def _validate(obj: Broker | DeadLetterQueue) -> None:
    try:
        obj.full_clean()
    except ValidationError as exc:
        raise InvalidInput("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None


def _check_dlq(dlq: DeadLetterQueue) -> None:
    kind = dlq.broker.kind
    if kind == BrokerKind.KAFKA:
        if not dlq.consumer_group:
            raise InvalidInput("consumer_group: a Kafka DLQ needs the consumer group the console captures with")
        if dlq.capture_mode != CaptureMode.OFFSETS:
            raise InvalidInput("capture_mode: a Kafka DLQ is captured by committing offsets")
    elif dlq.capture_mode != CaptureMode.DRAIN:
        raise InvalidInput("capture_mode: SQS and RabbitMQ DLQs are drained (deleted/acked after capture)")
    if kind == BrokerKind.SQS and not dlq.address.startswith(("http://", "https://")):
        raise InvalidInput("address: an SQS DLQ is given by its queue URL")
    if not isinstance(dlq.header_mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in dlq.header_mapping.items()
    ):
        raise InvalidInput('header_mapping: a JSON object of field -> header name, e.g. {"error_class": "x-error"}')
    if not isinstance(dlq.sources, list):
        raise InvalidInput("sources: a JSON list of queue/topic names")
