"""The pipelined capture pass against the real brokers (invariant 1): batch N+1 is read while
batch N commits on the writer thread, yet nothing is removed from a broker before its rows are
committed, and a commit that fails removes nothing of its batch."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, transaction
from django.utils.module_loading import import_string

from recovery.brokers.registry import ADAPTERS, adapter_for
from recovery.capture import services
from recovery.capture.identity import content_digest
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import BrokerKind, CapturePass, CaptureTrigger, DeadLetter, JobState
from tests.helpers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _fill(harness, dlq, count: int) -> None:
    harness.fill(dlq, [(f'{{"n": {i}}}'.encode(), {"x-seq": str(i), "x-exception-class": "E"}) for i in range(count)])


def _capture(dlq) -> CapturePass | None:
    requested = capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI)
    return capture_pass_run(pass_id=requested.pk)


def _left_on_broker(harness, dlq, expected: int) -> bool:
    adapter = adapter_for(harness.broker, timeout=10)
    try:  # SQS: the failed pass's messages come back after the visibility timeout (harness.VISIBILITY_S)
        return wait_until(lambda: adapter.depth(dlq.as_address()) == expected, timeout=15)
    finally:
        adapter.close()


def _committed_row(dlq, message) -> bool:
    """Whether a committed row holds this received message (read on the test's own connection,
    which sees only committed data)."""
    if dlq.broker.kind == BrokerKind.RABBITMQ:
        return DeadLetter.objects.filter(dlq=dlq, identity__startswith=f"amqp:{content_digest(message)}:").exists()
    prefix = "sqs" if dlq.broker.kind == BrokerKind.SQS else "kafka"
    return DeadLetter.objects.filter(dlq=dlq, identity=f"{prefix}:{message.identity}").exists()


def test_a_batch_is_removed_only_once_its_rows_are_committed(harness, monkeypatch) -> None:
    dlq = harness.make_dlq(capture_batch_size=4)
    _fill(harness, dlq, 14)
    adapter_class = import_string(ADAPTERS[harness.kind])
    real_remove = adapter_class.remove
    removed: list[int] = []

    def remove(self, address, messages):
        assert all(_committed_row(dlq, m) for m in messages), "removal before commit"
        removed.append(len(messages))
        return real_remove(self, address, messages)

    monkeypatch.setattr(adapter_class, "remove", remove)
    done = _capture(dlq)

    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.captured, done.removed) == (14, 14)
    assert sum(removed) == 14 and len(removed) >= 4  # batches of at most 4
    assert not DeadLetter.objects.filter(dlq=dlq, removed_at__isnull=True).exists()
    assert _left_on_broker(harness, dlq, 0)


def test_a_commit_that_fails_on_the_writer_thread_removes_nothing_of_its_batch(harness, monkeypatch) -> None:
    dlq = harness.make_dlq(capture_batch_size=5)
    _fill(harness, dlq, 12)
    real_write = services.dead_letters_write
    writes: list[str] = []

    def write(**kwargs):
        writes.append(threading.current_thread().name)
        if len(writes) == 2:
            raise DatabaseError("injected: the database went away")
        return real_write(**kwargs)

    monkeypatch.setattr(services, "dead_letters_write", write)
    with pytest.raises(DatabaseError, match="injected"):
        _capture(dlq)

    assert writes[1] != threading.current_thread().name, "the batch was written on the writer thread"
    failed = CapturePass.objects.get(dlq=dlq)
    assert failed.state == JobState.FAILED and "injected" in failed.error
    assert (failed.captured, failed.removed) == (5, 5)
    assert DeadLetter.objects.filter(dlq=dlq).count() == 5
    assert not DeadLetter.objects.filter(dlq=dlq, removed_at__isnull=True).exists()
    assert _left_on_broker(harness, dlq, 7), "the failed batch and the ones read after it stay on the broker"

    monkeypatch.setattr(services, "dead_letters_write", real_write)
    again = _capture(dlq)
    assert again.state == JobState.SUCCEEDED, again.error
    assert (again.captured, again.duplicates, again.removed) == (7, 0, 7)
    assert DeadLetter.objects.filter(dlq=dlq).count() == 12
    assert _left_on_broker(harness, dlq, 0)


def test_inside_a_callers_transaction_the_pass_writes_on_the_callers_connection(harness) -> None:
    """Another connection could not see the caller's uncommitted pass row: no writer thread."""
    dlq = harness.make_dlq(capture_batch_size=3)
    _fill(harness, dlq, 7)
    with transaction.atomic():
        done = _capture(dlq)
    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.captured, done.removed) == (7, 7)
    assert DeadLetter.objects.filter(dlq=dlq, removed_at__isnull=False).count() == 7
