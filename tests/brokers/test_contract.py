"""The broker contract: the same assertions against the real RabbitMQ, SQS (LocalStack) and
Kafka (Tansu) through their adapters. Invariants 1 (capture before remove), 2 (publish with
confirmation), 9 (no secret stored) and 10 (bad input is data) are proved here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from recovery.brokers.base import OutgoingMessage
from recovery.brokers.registry import adapter_for
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.capture.store import dead_letters_upsert
from recovery.models import AuditEvent, CapturePass, CaptureTrigger, DeadLetter, DeadLetterState, JobState
from recovery.permissions import UNMASK_GROUP, Role
from tests.brokers.harness import VISIBILITY_S
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _messages(harness, count: int, *, prefix: str = "m") -> list[tuple[bytes, dict[str, str]]]:
    messages = []
    for i in range(count):
        body = f'{{"n": {i}, "text": "naïve ✓ {prefix}"}}'.encode()
        messages.append((body, {"x-seq": str(i), "x-exception-class": "TimeoutError"}))
    return messages


def _capture(dlq, **kwargs) -> CapturePass:
    requested = capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI)
    return capture_pass_run(pass_id=requested.pk, **kwargs)


def test_publish_is_confirmed_per_message_in_order(harness) -> None:
    adapter = adapter_for(harness.broker, timeout=10)
    target = harness.target()
    try:
        results = adapter.publish(target, [OutgoingMessage(body=f"msg {i}".encode()) for i in range(5)])
        assert [r.index for r in results] == [0, 1, 2, 3, 4]
        assert all(r.confirmed for r in results), results
        received = adapter.receive(harness.target_address(target), max_messages=10, wait_seconds=10)
        assert sorted(m.body for m in received) == [f"msg {i}".encode() for i in range(5)]
    finally:
        adapter.close()


def test_round_trip_keeps_body_bytes_and_headers(harness) -> None:
    body = "naïve ✓ <script>alert(1)</script>".encode() if harness.text_only else b"\xff\x00\xfe binary \x80"
    headers = {
        "x-replay-id": "r-1",
        "x-original-message-id": "m-1",
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    }
    adapter = adapter_for(harness.broker, timeout=10)
    target = harness.target()
    try:
        assert adapter.publish(target, [OutgoingMessage(body=body, headers=headers)])[0].confirmed
        (message,) = adapter.receive(harness.target_address(target), max_messages=1, wait_seconds=10)
        assert message.body == body
        got = {k: (v.get("StringValue") if isinstance(v, dict) else v) for k, v in message.headers.items()}
        assert {k: got.get(k) for k in headers} == headers
    finally:
        adapter.close()


def test_depth_counts_the_messages_waiting(harness) -> None:
    dlq = harness.make_dlq()
    harness.fill(dlq, _messages(harness, 7))
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        assert wait_until(lambda: adapter.depth(dlq.as_address()) == 7, timeout=15)
    finally:
        adapter.close()


def test_a_redelivered_message_is_recognised_and_yields_no_second_row(harness) -> None:
    """Capture idempotency: messages received, committed and given back unremoved (what a
    crash does) come back from the broker and are recognised, one row each."""
    dlq = harness.make_dlq()
    harness.fill(dlq, _messages(harness, 5))
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        batch = adapter.receive(dlq.as_address(), max_messages=5, wait_seconds=10)
        assert len(batch) == 5
        with transaction.atomic():
            first = dead_letters_upsert(dlq=dlq, pass_id=None, messages=batch)
        adapter.release(dlq.as_address(), batch)
        again = adapter.receive(dlq.as_address(), max_messages=5, wait_seconds=10)
        with transaction.atomic():
            second = dead_letters_upsert(dlq=dlq, pass_id=None, messages=again)
    finally:
        adapter.close()
    assert (first.captured, first.duplicates) == (5, 0)
    assert (second.captured, second.duplicates) == (0, 5)
    assert DeadLetter.objects.filter(dlq=dlq).count() == 5
    assert set(DeadLetter.objects.filter(dlq=dlq).values_list("times_seen", flat=True)) == {2}


def test_identical_messages_are_distinct_letters(harness) -> None:
    """Two byte-identical dead letters are two messages (the same event published twice): both
    are captured, neither is mistaken for a redelivery of the other."""
    dlq = harness.make_dlq()
    harness.fill(dlq, [(b'{"same": true}', {"x-exception-class": "E"})] * 3)
    done = _capture(dlq)
    assert (done.captured, done.duplicates, done.removed) == (3, 0, 3), done.error
    assert DeadLetter.objects.filter(dlq=dlq).count() == 3


def test_a_capture_pass_drains_the_dlq_and_normalises_the_failure(harness) -> None:
    dlq = harness.make_dlq(header_mapping={"error_class": "x-exception-class"}, capture_batch_size=4)
    harness.fill(dlq, _messages(harness, 10))
    done = _capture(dlq)
    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.received, done.captured, done.duplicates, done.removed) == (10, 10, 0, 10)
    letters = DeadLetter.objects.filter(dlq=dlq)
    assert letters.count() == 10
    assert set(letters.values_list("error_class", flat=True)) == {"TimeoutError"}
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        assert wait_until(lambda: adapter.depth(dlq.as_address()) == 0, timeout=15)
    finally:
        adapter.close()
    again = _capture(dlq)
    assert again.state == JobState.SUCCEEDED and again.received == 0
    summary = AuditEvent.objects.filter(object_type="recovery.capturepass", object_id=str(done.pk))
    assert summary.filter(summary__contains="10 captured").exists()


@pytest.mark.fault
def test_capture_before_remove_survives_sigkill_between_commit_and_remove(harness) -> None:
    """Invariant 1 under a crash: the first batch's rows commit, the process dies before the
    broker hears anything; the next pass loses nothing and duplicates no row."""
    dlq = harness.make_dlq(capture_batch_size=5)
    harness.fill(dlq, _messages(harness, 12))
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "RECOVERY_FAULT_POINT": "capture.after_commit",
    }
    crashed = subprocess.run(
        [sys.executable, "manage.py", "capture", dlq.name], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    assert DeadLetter.objects.filter(dlq=dlq).count() == 5  # the first batch's rows are committed
    CapturePass.objects.filter(dlq=dlq, state=JobState.RUNNING).update(heartbeat_at="2000-01-01T00:00Z")
    if harness.kind == "sqs":
        time.sleep(VISIBILITY_S + 0.5)  # the crashed pass's messages become visible after the visibility timeout

    done = _capture(dlq)
    assert done.state == JobState.SUCCEEDED, done.error
    letters = DeadLetter.objects.filter(dlq=dlq)
    assert letters.count() == 12, "every message captured once"
    assert sorted(int(h["x-seq"] if not isinstance(h["x-seq"], dict) else h["x-seq"]["StringValue"])
                  for h in letters.values_list("headers", flat=True)) == list(range(12))  # fmt: skip
    assert letters.filter(times_seen=2).count() == 5, "the crashed batch was redelivered and recognised"
    assert not letters.filter(removed_at__isnull=True).exists(), "every row marked removed from the broker"
    assert CapturePass.objects.get(dlq=dlq, trigger=CaptureTrigger.CLI, state=JobState.FAILED).error
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        assert wait_until(lambda: adapter.depth(dlq.as_address()) == 0, timeout=15)
    finally:
        adapter.close()


def _oversize_body(n: int) -> bytes:
    """A distinct body above the 2 KiB limit these tests set; text, as SQS bodies must be."""
    return (f"{n:04d} " + "oversize ✓ " * 400).encode()


def _left_on_broker(harness, dlq) -> int:
    """What the DLQ still holds for the console: Kafka never deletes, so there the group's lag."""
    if harness.kind != "kafka":
        return harness.still_on_broker(dlq)
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        return adapter.depth(dlq.as_address())
    finally:
        adapter.close()


def _unmasked_client(make_user) -> Client:
    user = make_user(Role.VIEWER)
    user.groups.add(Group.objects.get_or_create(name=UNMASK_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def test_oversize_messages_are_parked_in_object_storage_removed_and_capture_goes_on(
    harness, settings, make_user
) -> None:
    """Two batches of oversize messages at the head of the DLQ (they once held RabbitMQ's prefetch
    unacked and stopped its capture; Kafka committed past them and lost their bodies): their bytes
    are parked in S3, the broker copies removed, the rest captured in the same pass, and each body
    comes back from the letter page's download byte for byte."""
    settings.RECOVERY_CAPTURE_MAX_BODY = 2048
    dlq = harness.make_dlq(capture_batch_size=2)
    big = [_oversize_body(i) for i in range(4)]
    harness.fill(dlq, [*((body, {"x-seq": str(i)}) for i, body in enumerate(big)), *_messages(harness, 3)])
    done = _capture(dlq)
    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.received, done.captured, done.oversize, done.removed) == (7, 7, 4, 7)
    assert DeadLetter.objects.filter(dlq=dlq, state=DeadLetterState.CAPTURED).count() == 3
    assert wait_until(lambda: _left_on_broker(harness, dlq) == 0, timeout=15), "removed from the broker"
    parked = list(DeadLetter.objects.filter(dlq=dlq, state=DeadLetterState.OVERSIZE))
    assert len(parked) == 4
    for letter in parked:
        assert bytes(letter.body) == b"" and letter.removed_at is not None
        assert letter.parked_bucket == settings.RECOVERY_PARKING_S3_BUCKET
        assert letter.parked_key.endswith(letter.content_hash)
    client = _unmasked_client(make_user)
    downloads = [client.get(reverse("letter-body", args=[letter.pk])) for letter in parked]
    assert all(d.status_code == 200 for d in downloads)
    assert sorted(d.content for d in downloads) == sorted(big)


def test_object_storage_down_leaves_the_oversize_message_on_the_broker(harness, settings) -> None:
    """A parking failure loses nothing: the oversize message stays on the broker, the pass fails
    saying so (after capturing the rest of its batch), and the next pass parks it."""
    settings.RECOVERY_CAPTURE_MAX_BODY = 2048
    endpoint = settings.RECOVERY_PARKING_S3_ENDPOINT_URL
    settings.RECOVERY_PARKING_S3_ENDPOINT_URL = "http://127.0.0.1:1"  # nothing listens: S3 is down
    dlq = harness.make_dlq(capture_batch_size=10)
    harness.fill(dlq, [*_messages(harness, 2), (_oversize_body(7), {"x-seq": "99"})])
    failed = _capture(dlq)
    assert failed.state == JobState.FAILED
    assert "left on the broker" in failed.error and "127.0.0.1:1" in failed.error
    letter = DeadLetter.objects.get(dlq=dlq, state=DeadLetterState.OVERSIZE)
    assert letter.parked_key == "" and letter.removed_at is None
    assert DeadLetter.objects.filter(dlq=dlq, state=DeadLetterState.CAPTURED, removed_at__isnull=False).count() == 2
    assert wait_until(lambda: _left_on_broker(harness, dlq) == 1, timeout=15), "the oversize message stays"

    settings.RECOVERY_PARKING_S3_ENDPOINT_URL = endpoint
    done = _capture(dlq)
    assert done.state == JobState.SUCCEEDED, done.error
    letter.refresh_from_db()
    assert letter.parked_key and letter.times_seen == 2 and letter.removed_at is not None
    assert DeadLetter.objects.filter(dlq=dlq).count() == 3
    assert wait_until(lambda: _left_on_broker(harness, dlq) == 0, timeout=15)


def test_an_oversize_message_parked_before_is_removed_even_while_storage_is_down(harness, settings) -> None:
    """A pass that parked and committed a message and died before removing it leaves it on the
    broker; the next pass removes it even with object storage down: its row says where its bytes lie."""
    settings.RECOVERY_CAPTURE_MAX_BODY = 2048
    dlq = harness.make_dlq()
    harness.fill(dlq, [(_oversize_body(3), {"x-seq": "3"})])
    adapter = adapter_for(harness.broker, timeout=10)
    try:
        batch = adapter.receive(dlq.as_address(), max_messages=1, wait_seconds=10)
        with transaction.atomic():
            assert dead_letters_upsert(dlq=dlq, pass_id=None, messages=batch).removable_rows
        adapter.release(dlq.as_address(), batch)
    finally:
        adapter.close()
    settings.RECOVERY_PARKING_S3_ENDPOINT_URL = "http://127.0.0.1:1"  # nothing listens: S3 is down

    done = _capture(dlq)

    assert done.state == JobState.SUCCEEDED, done.error
    letter = DeadLetter.objects.get(dlq=dlq)
    assert letter.times_seen == 2 and letter.parked_key and letter.removed_at is not None
    assert wait_until(lambda: _left_on_broker(harness, dlq) == 0, timeout=15)


def test_a_broker_that_is_down_fails_the_pass_with_backoff_and_no_crash(harness, settings) -> None:
    settings.RECOVERY_CAPTURE_RETRY_ATTEMPTS = 3
    settings.RECOVERY_CAPTURE_RETRY_BASE_MS = 10
    dlq = harness.make_dlq(capture_interval=60)
    broker = dlq.broker
    broker.endpoint = {"rabbitmq": "amqp://127.0.0.1:1/%2F", "sqs": "http://127.0.0.1:1", "kafka": "127.0.0.1:1"}[
        harness.kind
    ]
    broker.save()
    failed = _capture(dlq)
    assert failed.state == JobState.FAILED
    assert failed.attempts == 3
    assert "127.0.0.1" in failed.error or "connect" in failed.error.lower()
    assert [e["message"][:20] for e in failed.log][:2] == ["attempt 1 failed, re", "attempt 2 failed, re"]
    dlq.refresh_from_db()
    assert dlq.consecutive_failures == 1 and dlq.next_capture_at is not None
    first_backoff = dlq.next_capture_at
    _capture(dlq)
    dlq.refresh_from_db()
    assert dlq.consecutive_failures == 2 and dlq.next_capture_at > first_backoff


def test_prepare_publish_opens_the_target_before_the_first_publish(harness) -> None:
    """The replay engine connects to a target before it takes its tokens (see
    recovery.replay.engine.Worker._prepare_targets); publishing afterwards is confirmed as usual."""
    adapter = adapter_for(harness.broker, timeout=10)
    target = harness.target()
    try:
        adapter.prepare_publish(target)
        adapter.prepare_publish(target)  # again: nothing new to open, no error
        results = adapter.publish(target, [OutgoingMessage(body=b"after prepare")])
        assert [r.confirmed for r in results] == [True]
    finally:
        adapter.close()
