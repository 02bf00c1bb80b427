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
from recovery.masking import JsonPathError, parse_json_path
from recovery.masking.paths import MAX_PATHS
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


MASK_FIELDS = ("mask_json_paths", "mask_headers", "mask_emails", "mask_card_numbers")
BROKER_FIELDS = ("name", "kind", "endpoint", "options", "credentials_ref", "enabled")
DLQ_FIELDS = (
    "broker", "name", "address", "vhost", "consumer_group", "replay_target", "replay_routing_key", "capture_mode",
    "capture_interval", "capture_batch_size", "sources", "header_mapping", "enabled", *MASK_FIELDS,
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
    """Create or change a dead-letter queue; admins only; audited with before/after. A change to
    its masks is also recorded on its own (dlq.masks_updated), so who weakened a mask is easy to find."""

    def prepare(target: DeadLetterQueue) -> None:
        if target.broker_id and not data.get("capture_mode") and dlq is None:
            target.capture_mode = target.default_capture_mode()

    with transaction.atomic():
        masks_before = _snapshot(_stored(dlq), MASK_FIELDS) if dlq else None
        saved = _save_audited(
            actor=actor, existing=dlq, new=DeadLetterQueue, fields=DLQ_FIELDS, data=data, label="dead-letter queue",
            actions=(AuditAction.DLQ_CREATED, AuditAction.DLQ_UPDATED), prepare=prepare, check=_check_dlq,
        )  # fmt: skip
        masks_after = _snapshot(saved, MASK_FIELDS)
        if masks_before is not None and masks_before != masks_after:
            audit_record(
                actor=actor, action=AuditAction.DLQ_MASKS_UPDATED, obj=saved, summary=f"masks of {saved.name} changed",
                before=masks_before, after=masks_after,
            )  # fmt: skip
    return saved


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
        # From the database: a ModelForm has already copied the new values onto ``existing``.
        before = _snapshot(_stored(existing), fields) if existing else None
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


def _stored(obj: Model) -> Model:
    """The row as committed, locked until the transaction ends."""
    return type(obj)._default_manager.select_for_update(no_key=True).get(pk=obj.pk)  # FK checks may pass


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
    _check_masks(dlq)


def _check_masks(dlq: DeadLetterQueue) -> None:
    """Masks the masker can apply: a path it cannot parse would silently mask nothing."""
    if not isinstance(dlq.mask_json_paths, list) or len(dlq.mask_json_paths) > MAX_PATHS:
        raise InvalidInput(f"mask_json_paths: a list of at most {MAX_PATHS} JSON paths")
    for path in dlq.mask_json_paths:
        try:
            parse_json_path(path)
        except JsonPathError as exc:
            raise InvalidInput(f"mask_json_paths: {exc}") from None
    if not isinstance(dlq.mask_headers, list) or not all(isinstance(n, str) and n.strip() for n in dlq.mask_headers):
        raise InvalidInput("mask_headers: a list of header names")
