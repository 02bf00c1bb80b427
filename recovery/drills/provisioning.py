"""A drill's queue pair on its broker and the DLQ row it captures from, made ready before each
run (idempotent: what exists is checked, never changed).

Per broker, through the adapter's ``ensure_dead_letter_pair``: SQS, a DLQ and a work queue whose
RedrivePolicy moves a message there after one receive; RabbitMQ, a DLQ and a work queue with
``x-dead-letter-exchange`` "" and ``x-dead-letter-routing-key`` the DLQ; Kafka, a work topic and
a DLQ topic (the drill's consumer publishes its failures there, Spring Kafka style). What the
drill created itself is recorded on the drill (``created_queues``) and audited.
"""

from __future__ import annotations

from django.db import transaction
from django.utils.text import slugify

from recovery.audit.services import audit_record
from recovery.brokers.registry import broker_session
from recovery.models import AuditAction, BrokerKind, CaptureMode, DeadLetterQueue, Drill

SQS_MAX_RECEIVE_COUNT = 1  # the first failed receive is the last: runs stay short


def capture_group(drill: Drill) -> str:
    """The Kafka consumer group the console captures the drill's DLQ topic with."""
    return f"drill-{drill.name}-capture"


def _dlq_row(drill: Drill, address: str) -> tuple[DeadLetterQueue, bool]:
    """The DLQ row for ``address`` on the drill's broker: an existing one (an admin may have lent
    the drill a configured DLQ) or a new one captured only on demand (the drill captures it)."""
    existing = DeadLetterQueue.objects.filter(broker=drill.broker, address=address).first()
    if existing is not None:
        return existing, False
    name = slugify(f"drill-{drill.name}")[:64]
    if DeadLetterQueue.objects.filter(name=name).exists():
        name = f"{name[:50]}-{drill.pk}"
    kind = drill.broker.kind
    routing = (
        {"replay_target": "", "replay_routing_key": drill.work_queue}
        if kind == BrokerKind.RABBITMQ
        else {"replay_target": drill.work_address or drill.work_queue}
    )
    return DeadLetterQueue.objects.create(
        broker=drill.broker, name=name, address=address, capture_interval=0, sources=[drill.work_queue],
        consumer_group=capture_group(drill) if kind == BrokerKind.KAFKA else "",
        capture_mode=CaptureMode.OFFSETS if kind == BrokerKind.KAFKA else CaptureMode.DRAIN, **routing,
    ), True  # fmt: skip


def drill_provision(drill: Drill) -> list[str]:
    """Make the queue pair and the DLQ row exist; returns the queues created now. Raises
    BrokerError when the broker refuses (an existing work queue that does not dead-letter to the
    DLQ is refused, not altered)."""
    with broker_session(drill.broker, timeout=10) as adapter:
        if drill.broker.kind == BrokerKind.SQS:
            work, dlq, created = adapter.ensure_dead_letter_pair(  # type: ignore[attr-defined]
                drill.work_queue, drill.dead_letter_queue, max_receive_count=SQS_MAX_RECEIVE_COUNT
            )
        else:
            work, dlq, created = adapter.ensure_dead_letter_pair(  # type: ignore[attr-defined]
                drill.work_queue, drill.dead_letter_queue
            )
    with transaction.atomic():
        drill = Drill.objects.select_for_update().get(pk=drill.pk)
        drill.work_address = work
        row, new_row = (drill.dlq, False) if drill.dlq and drill.dlq.address == dlq else _dlq_row(drill, dlq)
        drill.dlq = row
        drill.created_queues = sorted({*drill.created_queues, *created})
        drill.save(update_fields=["work_address", "dlq", "created_queues", "updated_at"])
        if created or new_row:
            audit_record(
                actor="drill", action=AuditAction.DRILL_PROVISIONED, obj=drill,
                summary=f"drill {drill.name!r}: queue pair ready on {drill.broker.name}"
                + (f", created {', '.join(created)}" if created else "") + (f", DLQ row {row.name}" if new_row else ""),
                after={"created": created, "dlq": row.pk, "work_address": work, "dlq_address": dlq},
            )  # fmt: skip
    return created
