"""Capture: move dead letters from a broker into the quarantine store (invariant 1).

A pass reads a batch, commits its rows and the pass's counters in one transaction, and only
then removes the batch from the broker (delete / ack / commit offsets). A worker killed
between the two leaves the messages on the broker; the next pass re-reads them and the upsert
recognises them. Temporary broker errors are retried with exponential backoff recorded on the
pass; a pass that still fails pushes the DLQ's next scheduled capture back (no crash loop).

Batches are pipelined: the next batch is read and prepared on the pass's thread while the
previous one commits on a writer thread with its own database connection, and a marker thread
records removals on a third (pipeline.py); a batch is removed from the broker only once its own
commit has returned.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.brokers.base import BrokerAdapter, DlqAddress
from recovery.brokers.registry import broker_session
from recovery.capture.parking import ParkingError
from recovery.capture.pipeline import BatchWriter
from recovery.capture.store import (
    PreparedBatch,
    StoreResult,
    dead_letters_mark_removed,
    dead_letters_prepare,
    dead_letters_write,
)
from recovery.errors import BrokerError, InvalidInput, RecoveryError
from recovery.faults import fault_point
from recovery.jobs.lifecycle import job_claim, job_finish, job_note
from recovery.jobs.queue import enqueue
from recovery.jobs.watchdog import lost_rows, recover_lost
from recovery.models import AuditAction, BrokerKind, CapturePass, CaptureTrigger, DeadLetterQueue
from recovery.models.jobs import JOB_ACTIVE
from recovery.observability import capture as telemetry
from recovery.observability import metrics
from recovery.permissions import Capability, ensure_can

logger = logging.getLogger(__name__)


def _retire_lost_passes(dlq: DeadLetterQueue) -> None:
    """A pass of this DLQ whose job was lost (queued and never started, or running without a
    heartbeat) is retired by the job watchdog's rules now rather than at its next tick, so
    capture can go on."""
    for lost in lost_rows(CapturePass, CapturePass.objects.filter(dlq=dlq)):
        recover_lost(lost)


def _create_pass(*, dlq: DeadLetterQueue, trigger: str, actor: Any) -> CapturePass:
    """Inside a transaction holding the DLQ's row lock: refuse while a pass is queued or running."""
    _retire_lost_passes(dlq)
    if CapturePass.objects.filter(dlq=dlq, state__in=JOB_ACTIVE).exists():
        raise InvalidInput(f"a capture pass of {dlq.name} is already queued or running")
    user = actor if getattr(actor, "is_authenticated", False) else None
    return CapturePass.objects.create(dlq=dlq, trigger=trigger, requested_by=user)


def capture_pass_request(*, actor: Any, dlq: DeadLetterQueue, trigger: str = CaptureTrigger.MANUAL) -> CapturePass:
    """'Capture now': create the pass row, audit the request, and enqueue the job on commit."""

    if trigger == CaptureTrigger.MANUAL:
        ensure_can(actor, Capability.CAPTURE)
    if not dlq.enabled:
        raise InvalidInput(f"{dlq.name} is disabled: enable it before capturing")
    with transaction.atomic():
        # NO KEY UPDATE: serialises requests for this DLQ without blocking the foreign-key checks
        # (KEY SHARE) of rows that reference it, which commit after taking the audit chain's lock:
        # FOR UPDATE here plus audit_record deadlocked with them.
        DeadLetterQueue.objects.select_for_update(no_key=True).get(pk=dlq.pk)
        capture_pass = _create_pass(dlq=dlq, trigger=trigger, actor=actor)
        audit_record(
            actor=actor,
            action=AuditAction.CAPTURE_REQUESTED,
            obj=capture_pass,
            summary=f"capture of {dlq.name} requested",
        )
        if trigger != CaptureTrigger.CLI:
            enqueue("capture_dlq", capture_pass.pk)
    return capture_pass


def capture_due_passes_enqueue() -> list[CapturePass]:
    """Scheduler tick: one pass for every enabled DLQ whose next capture is due. Claimed with a
    conditional UPDATE of ``next_capture_at``, so two schedulers never create the same pass."""

    now = timezone.now()
    created: list[CapturePass] = []
    due = DeadLetterQueue.objects.filter(enabled=True, capture_interval__gt=0, broker__enabled=True).exclude(
        next_capture_at__gt=now
    )
    with transaction.atomic():
        for dlq in due.select_for_update(skip_locked=True, of=("self",), no_key=True):  # see capture_pass_request
            claimed = DeadLetterQueue.objects.filter(pk=dlq.pk, next_capture_at=dlq.next_capture_at).update(
                next_capture_at=now + timedelta(seconds=dlq.capture_interval)
            )
            if not claimed:
                continue
            try:
                capture_pass = _create_pass(dlq=dlq, trigger=CaptureTrigger.SCHEDULER, actor="scheduler")
            except InvalidInput:
                continue  # the previous pass is still going: its own end schedules the next one
            enqueue("capture_dlq", capture_pass.pk)
            created.append(capture_pass)
        if created:
            audit_record(
                actor="scheduler",
                action=AuditAction.CAPTURE_SCHEDULED,
                summary=f"scheduled capture of {', '.join(p.dlq.name for p in created)}",
                after={"passes": [p.pk for p in created]},
            )
    return created


@dataclass
class _Removal:
    """Rows whose messages the broker confirmed removed, not yet marked so."""

    rows: list[int]
    count: int
    at: datetime
    unparked: int = 0  # oversize messages of the batch left on the broker: their bytes could not be parked


def _commit_batch(capture_pass: CapturePass, prepared: PreparedBatch, removed_rows: list[int]) -> StoreResult:
    """Writer job: commit a batch's rows and the pass's counters in one transaction (invariant 1:
    the rows are committed before any removal). ``removed_rows`` are rows of earlier batches
    whose removal may not be marked yet: AMQP identities must not match them."""
    with transaction.atomic():
        stored = dead_letters_write(dlq=capture_pass.dlq, prepared=prepared, removed_rows=removed_rows)
        CapturePass.objects.filter(pk=capture_pass.pk).update(
            received=F("received") + stored.received,
            captured=F("captured") + stored.captured,
            duplicates=F("duplicates") + stored.duplicates,
            oversize=F("oversize") + stored.oversize,
            processed=F("processed") + stored.received,
            heartbeat_at=timezone.now(),
        )
    return stored


def _mark_removed(capture_pass: CapturePass, removal: _Removal) -> None:
    """Marker job: record the broker's confirmed removal on the rows and the pass's counter."""
    with transaction.atomic():
        dead_letters_mark_removed(removal.rows, at=removal.at)
        CapturePass.objects.filter(pk=capture_pass.pk).update(removed=F("removed") + removal.count)


class _Marking:
    """Removals being recorded by the marker while the writer goes on with the next batches.
    Until a removal's marking has committed, its rows are handed to the writer as removed, so
    that no AMQP redelivery is matched to them (invariant 1: one row per broker message)."""

    def __init__(self, marker: BatchWriter, capture_pass: CapturePass) -> None:
        self.marker = marker
        self.capture_pass = capture_pass
        self.jobs: list[tuple[_Removal, Future[None]]] = []

    def add(self, removal: _Removal) -> None:
        if removal.rows:
            self.jobs.append((removal, self.marker.submit(_mark_removed, self.capture_pass, removal)))

    def unmarked_rows(self) -> list[int]:
        """Rows removed from the broker whose marking may not be committed yet. A marking that
        failed raises its error here."""
        for _, job in self.jobs:
            if job.done():
                job.result()
        self.jobs = [(removal, job) for removal, job in self.jobs if not job.done()]
        return [row for removal, _ in self.jobs for row in removal.rows]

    def wait(self) -> None:
        for _, job in self.jobs:
            job.result()
        self.jobs = []


def _remove_committed(adapter: BrokerAdapter, address: DlqAddress, committing: Future[StoreResult]) -> _Removal:
    """Wait for a batch's commit, then remove it from the broker (invariant 1). A failed commit
    raises here, before the broker hears anything: its messages stay there."""
    stored = committing.result()
    fault_point("capture.after_commit")  # rows committed, nothing removed yet
    if stored.removable:
        adapter.remove(address, stored.removable)
    return _Removal(
        rows=stored.removable_rows, count=len(stored.removable), at=timezone.now(), unparked=stored.unparked
    )


@functools.cache
def _throttle_client() -> Any:
    """One Redis client per process for the classification throttle (not one per batch)."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def _classification_requested(dlq: DeadLetterQueue, *, throttle: bool = True) -> None:
    """Have the new letters classified (rules, fingerprint, duplicates, expiry, and the
    x-replay-id of a replayed message that came back, which stop conditions count) by a job in
    another worker, at most once a second per DLQ while a pass runs, and once when it ends. The
    capture pass itself stays as fast as the broker and PostgreSQL allow, and a classification
    problem can never fail a capture (invariant 1 comes first)."""

    if throttle:
        try:
            if not _throttle_client().set(f"recovery:classify:{dlq.pk}", "1", nx=True, px=1000):
                return
        except Exception:  # noqa: BLE001 - without Redis there is no job queue either; the pass goes on
            return
    try:
        enqueue("classify_dlq", dlq.pk)
    except Exception:  # noqa: BLE001 - the scheduler's next pass asks again
        logger.warning("classification of %s not enqueued", dlq.name, exc_info=True)


def _refresh_retention(adapter: BrokerAdapter, dlq: DeadLetterQueue) -> None:
    """Keep the DLQ's broker-side retention current (letters' expiry is computed from it); a
    broker that cannot say keeps the last known value."""
    try:
        retention = adapter.retention_seconds(dlq.as_address())
    except BrokerError:
        return
    if retention != dlq.retention_seconds:
        DeadLetterQueue.objects.filter(pk=dlq.pk).update(retention_seconds=retention)
        dlq.retention_seconds = retention


def _holding_hides_messages(dlq: DeadLetterQueue) -> bool:
    """Whether messages a pass holds unremoved can hide others from its next read: on an SQS FIFO
    queue a message group with a message in flight returns nothing until that message is deleted,
    so an empty read while a batch is still held does not mean the DLQ is empty."""
    return dlq.broker.kind == BrokerKind.SQS and dlq.address.rstrip("/").endswith(".fifo")


def _capture_batches(capture_pass: CapturePass, max_messages: int) -> bool:
    """Read, commit, then remove, batch after batch, until the DLQ is empty or the limit is hit;
    returns whether the limit stopped it.

    Pipelined (recovery/capture/pipeline.py): while the writer commits batch N, this thread reads
    and prepares batch N+1; then it waits for N's commit and removes N (invariant 1), and the
    marker records N's removal on its own connection while the writer goes on with N+1. Every
    broker call stays on this thread.

    The DLQ counts as empty only after a read that found nothing while the pass held nothing
    unremoved: on SQS FIFO a read during N's commit finds nothing when every group is held by N,
    so after removing N the pass reads again. An oversize message whose bytes could not be parked
    stops the pass after its batch (the rest of that batch is captured and removed, the message
    stays on the broker) with a ParkingError.
    """
    dlq = capture_pass.dlq
    address = dlq.as_address()
    reread_when_held = _holding_hides_messages(dlq)
    parking_error, unparked = "", 0
    with broker_session(dlq.broker, timeout=10) as adapter, BatchWriter() as writer, BatchWriter() as marker:
        marking = _Marking(marker, capture_pass)
        retention_known = False
        total = 0
        committing: Future[StoreResult] | None = None  # the writer's job for the last batch read
        while True:
            reading = total < max_messages and not parking_error
            try:
                batch = []
                if reading:
                    batch = adapter.receive(
                        address,
                        max_messages=min(dlq.capture_batch_size, max_messages - total),
                        wait_seconds=settings.RECOVERY_CAPTURE_WAIT_SECONDS,
                    )
            except BrokerError:
                if committing is not None:  # finish the batch already committed before giving up
                    marking.add(_remove_committed(adapter, address, committing))
                marking.wait()
                raise
            total += len(batch)
            telemetry.messages_received(batch)
            if batch and not retention_known:  # the broker answers: ask it once per pass
                _refresh_retention(adapter, dlq)
                retention_known = True
            prepared = dead_letters_prepare(dlq=dlq, pass_id=capture_pass.pk, messages=batch) if batch else None
            if total == len(batch):  # the pass's first read: the oldest message waiting, if any
                telemetry.first_batch_read(dlq, prepared)
            held = committing is not None
            if committing is not None:
                removal = _remove_committed(adapter, address, committing)
                marking.add(removal)
                unparked += removal.unparked
                committing = None
                _classification_requested(dlq)
            if prepared is None:
                if reading and held and reread_when_held:
                    continue  # what looked empty may have been hidden by the batch just removed
                break
            # storage refused: read no further (the rest would likely meet the same refusal)
            parking_error = parking_error or prepared.parking_error
            committing = writer.submit(_commit_batch, capture_pass, prepared, marking.unmarked_rows())
        marking.wait()
    _classification_requested(dlq, throttle=False)
    if unparked:
        raise ParkingError(f"{unparked} oversize message(s) left on the broker, the pass stopped: {parking_error}")
    return total >= max_messages


def _read_remaining(dlq: DeadLetterQueue) -> int | None:
    """The DLQ's depth once the pass has given back everything it held (its broker session is
    closed: RabbitMQ requeued its prefetch, SQS made its unremoved messages visible); also the
    depth metric. None when the broker cannot say."""
    try:
        with broker_session(dlq.broker, timeout=10) as adapter:
            return telemetry.depth_read(adapter, dlq)
    except RecoveryError as exc:
        logger.info("depth of %s not read after its capture pass: %s", dlq.name, exc)
        return None


def capture_pass_run(*, pass_id: int, max_messages: int | None = None) -> CapturePass | None:
    """Run a queued pass (the capture job). Claimed with a conditional UPDATE; returns None when
    another worker has it. Never raises for broker trouble: the pass records it."""
    if not job_claim(CapturePass, pass_id):
        return None
    capture_pass = CapturePass.objects.select_related("dlq__broker").get(pk=pass_id)
    with telemetry.capture_pass(capture_pass):
        return _run_claimed(capture_pass, max_messages or settings.RECOVERY_CAPTURE_MAX_PER_PASS)


def _run_claimed(capture_pass: CapturePass, limit: int) -> CapturePass:
    """The attempts of a claimed pass, then its end (retries with backoff; see the module doc)."""
    attempts, error, limit_reached = 0, "", False
    pass_id = capture_pass.pk
    while True:
        attempts += 1
        CapturePass.objects.filter(pk=pass_id).update(attempts=attempts)
        try:
            limit_reached = _capture_batches(capture_pass, limit)
            error = ""
            break
        except ParkingError as exc:
            # Not retried: object storage that refused a moment ago is as likely to refuse again,
            # and the DLQ's backoff brings the next pass. The message stays on the broker.
            error = str(exc)
            metrics.capture_error(dlq=capture_pass.dlq.name, kind="parking")
            job_note(capture_pass, f"attempt {attempts} failed: {error}")
            break
        except BrokerError as exc:
            error = str(exc)
            metrics.capture_error(dlq=capture_pass.dlq.name, kind="permanent" if exc.permanent else "transient")
            if exc.permanent or attempts >= settings.RECOVERY_CAPTURE_RETRY_ATTEMPTS:
                job_note(capture_pass, f"attempt {attempts} failed, giving up: {error}")
                break
            delay = settings.RECOVERY_CAPTURE_RETRY_BASE_MS * 2 ** (attempts - 1) / 1000
            job_note(capture_pass, f"attempt {attempts} failed, retrying in {delay:g} s: {error}")
            time.sleep(delay)
        except Exception as exc:
            # A bug or a database failure: record it on the pass (no pass is left 'running'),
            # then let the job system see the exception too.
            metrics.capture_error(dlq=capture_pass.dlq.name, kind="internal")
            _finish(capture_pass, f"internal error: {type(exc).__name__}: {exc}"[:2000])
            raise
    return _finish(capture_pass, error, limit_reached=limit_reached)


def _finish(capture_pass: CapturePass, error: str, *, limit_reached: bool = False) -> CapturePass:
    """End the pass: failed with ``error``, or succeeded with what the broker still holds (its
    "N remain" outcome). A scheduled DLQ with messages left is due again at once."""
    dlq = capture_pass.dlq
    remaining = None if error else _read_remaining(dlq)
    now = timezone.now()
    with transaction.atomic():
        CapturePass.objects.filter(pk=capture_pass.pk).update(remaining=remaining, limit_reached=limit_reached)
        locked = DeadLetterQueue.objects.select_for_update(no_key=True).get(pk=dlq.pk)  # see capture_pass_request
        if error:
            failures = locked.consecutive_failures + 1
            backoff = min(
                max(locked.capture_interval, 30) * 2 ** min(failures - 1, 16), settings.RECOVERY_CAPTURE_MAX_BACKOFF
            )
            DeadLetterQueue.objects.filter(pk=dlq.pk).update(
                consecutive_failures=failures, next_capture_at=now + timedelta(seconds=backoff)
            )
        else:
            due = {"next_capture_at": now} if remaining and locked.capture_interval else {}
            if locked.consecutive_failures or due:
                DeadLetterQueue.objects.filter(pk=dlq.pk).update(consecutive_failures=0, **due)
        # A pass the watchdog retired meanwhile (its heartbeat was late) stays failed: job_finish
        # moves only a running row. Its counts and this event still record what it did.
        job_finish(CapturePass, capture_pass.pk, error=error)
        capture_pass.refresh_from_db()
        telemetry.pass_finished(capture_pass, dlq)
        outcome = "failed" if error else "finished"
        audit_record(
            actor="capture",
            action=AuditAction.CAPTURE_FINISHED,
            obj=capture_pass,
            summary=(
                f"capture of {dlq.name} {outcome}: {capture_pass.captured} captured, "
                f"{capture_pass.duplicates} already known, {capture_pass.oversize} oversize, "
                f"{capture_pass.removed} removed from the broker"
                + (f", {capture_pass.remaining} remain" if capture_pass.remaining else "")
                + (" (limit reached)" if capture_pass.limit_reached else "")
            )[:500],
            after={
                "state": capture_pass.state,
                "received": capture_pass.received,
                "captured": capture_pass.captured,
                "duplicates": capture_pass.duplicates,
                "oversize": capture_pass.oversize,
                "removed": capture_pass.removed,
                "attempts": capture_pass.attempts,
                "remaining": capture_pass.remaining,
                "limit_reached": capture_pass.limit_reached,
                "error": error[:1000],
            },
        )
    return capture_pass
