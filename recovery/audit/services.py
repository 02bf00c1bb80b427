"""Audit writes. ``audit_record`` is the only writer of audit events (invariant 8)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from recovery.audit.canonical import (
    GENESIS_HASH,
    checkpoint_signature,
    clean_text,
    event_content,
    event_hash,
    format_time,
    key_id,
    normalise_json,
)
from recovery.audit.context import current_trace_id, request_context
from recovery.audit.export import FORMATS, AuditFilters, ExportPlan
from recovery.errors import InvalidInput
from recovery.jobs.lifecycle import job_beat, job_claim, job_finish
from recovery.jobs.queue import enqueue
from recovery.models import AuditAction, AuditCheckpoint, AuditEvent, AuditVerification, VerificationOutcome
from recovery.models.jobs import JOB_ACTIVE

# pg_advisory_xact_lock key that serialises chain appends: held from the read of the head to the
# commit, so concurrent writers queue and the sequence has no gap and no fork.
CHAIN_LOCK = 0x61756469745F63  # "audit_c"

SYSTEM_PREFIX = "system:"


def _lock_chain() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])


def _head() -> tuple[int, str]:
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    return last if last else (0, GENESIS_HASH)


def _actor(actor: Any) -> tuple[int | None, str]:
    """A user (id + username snapshot) or a named system actor ('scheduler' -> 'system:scheduler')."""
    if actor is None:
        return None, "anonymous"
    if isinstance(actor, str):
        name = actor if actor.startswith(SYSTEM_PREFIX) else SYSTEM_PREFIX + actor
        return None, clean_text(name, 150)
    if getattr(actor, "is_authenticated", False):
        return actor.pk, clean_text(actor.get_username(), 150)
    return None, "anonymous"


def audit_record(
    *,
    actor: Any,
    action: AuditAction,
    summary: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction (refuses to run outside
    one: an event must commit or roll back with the change it records).

    ``actor`` is a user, a system actor name (``"scheduler"``), or None for anonymous.
    Message payloads never belong here: high-volume work is summarised per batch and the
    per-message record of a replay is its ledger.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    if obj is not None:
        object_type, object_id = obj._meta.label_lower, str(obj.pk)
    actor_id, actor_name = _actor(actor)
    context = request_context()
    fields = {
        "actor_id": actor_id,
        "actor_name": actor_name,
        "client_ip": context.client_ip,
        "user_agent": context.user_agent,
        "request_id": context.request_id,
        "trace_id": current_trace_id(),
        "action": AuditAction(action).value,
        "object_type": clean_text(object_type, 60),
        "object_id": clean_text(str(object_id), 64),
        "summary": clean_text(summary, 500),
        "before": normalise_json(before),
        "after": normalise_json(after),
        "reason": clean_text(reason),
    }
    _lock_chain()
    last_seq, prev_hash = _head()
    at = timezone.now()
    content = event_content(seq=last_seq + 1, at=at, prev_hash=prev_hash, **fields)
    return AuditEvent.objects.create(seq=last_seq + 1, at=at, prev_hash=prev_hash, hash=event_hash(content), **fields)


def audit_checkpoint_record(*, force: bool = False) -> AuditCheckpoint | None:
    """Sign the chain's head (seq and hash) with AUDIT_HMAC_KEY, when it moved since the last
    checkpoint and AUDIT_CHECKPOINT_INTERVAL has passed (or always with ``force``).

    Not itself an audit event: it is the trail's signature, and recording it as an event would
    move the head it signs."""
    with transaction.atomic():
        _lock_chain()
        seq, head_hash = _head()
        if seq == 0:
            return None
        last = AuditCheckpoint.objects.order_by("-seq", "-at").first()
        now = timezone.now()
        if not force and last is not None:
            interval = timedelta(seconds=settings.AUDIT_CHECKPOINT_INTERVAL)
            if last.seq == seq or now - last.at < interval:
                return None
        at = format_time(now)
        return AuditCheckpoint.objects.create(
            seq=seq,
            head_hash=head_hash,
            at=now,
            key_id=key_id(settings.AUDIT_HMAC_KEY),
            signature=checkpoint_signature(settings.AUDIT_HMAC_KEY, seq=seq, head_hash=head_hash, at=at),
        )


def audit_verification_request(*, actor: Any) -> AuditVerification:
    """Create a verification row and enqueue the verifier; refuses while one is queued or running."""
    from recovery.permissions import Capability, ensure_can

    ensure_can(actor, Capability.VIEW)
    with transaction.atomic():
        active = AuditVerification.objects.select_for_update().filter(state__in=JOB_ACTIVE)
        if active.exists():
            raise InvalidInput("a chain verification is already queued or running")
        verification = AuditVerification.objects.create(requested_by=actor, requested_at=timezone.now())
        audit_record(
            actor=actor,
            action=AuditAction.AUDIT_VERIFY_REQUESTED,
            obj=verification,
            summary="requested verification of the audit chain",
        )
        enqueue("audit_verify", verification.pk)
    return verification


def audit_verification_run(*, verification_id: int) -> AuditVerification | None:
    """Run a queued verification (the job). Claimed with a conditional UPDATE so that only one
    worker runs it; progress is written to the row as the verifier goes."""
    from recovery.audit.verification import verify_chain

    if not job_claim(AuditVerification, verification_id):
        return None

    def progress(checked: int) -> None:
        job_beat(AuditVerification, verification_id, processed=checked)

    try:
        report = verify_chain(progress=progress)
    except Exception as exc:
        with transaction.atomic():
            job_finish(AuditVerification, verification_id, error=f"{type(exc).__name__}: {exc}")
            verification = AuditVerification.objects.get(pk=verification_id)
            audit_record(
                actor="verifier",
                action=AuditAction.AUDIT_VERIFIED,
                obj=verification,
                summary="chain verification could not finish",
                after={"state": verification.state, "message": verification.error},
            )
        raise
    with transaction.atomic():
        job_finish(
            AuditVerification,
            verification_id,
            outcome=VerificationOutcome.PASSED if report.ok else VerificationOutcome.BROKEN,
            head_seq=report.head_seq,
            processed=report.checked,
            total=report.checked,
            checkpoints_checked=report.checkpoints_checked,
            first_broken_seq=report.first_broken_seq,
            message=report.message,
        )
        verification = AuditVerification.objects.get(pk=verification_id)
        audit_record(
            actor="verifier",
            action=AuditAction.AUDIT_VERIFIED,
            obj=verification,
            summary=report.message[:500],
            after={"ok": report.ok, "checked": report.checked, "first_broken_seq": report.first_broken_seq},
        )
    return verification


def audit_export_start(*, actor: Any, filters: AuditFilters, fmt: str) -> ExportPlan:
    """Record who exported what (an audit event), sign the head, and return the plan whose
    lines ``export_lines`` streams: every matching event up to that signed head."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.AUDIT_EXPORTED,
            summary=f"exported the audit trail as {fmt}",
            after={"format": fmt, "filters": filters.as_dict()},
        )
        checkpoint = audit_checkpoint_record(force=True)
    if checkpoint is None:  # cannot happen: the export event above is in the chain
        raise RuntimeError("the audit chain is empty after recording the export")
    return ExportPlan(fmt=fmt, filters=filters, checkpoint=checkpoint)
