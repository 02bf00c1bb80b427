"""The engine against each real broker: an approved plan's run publishes every letter to the
target with broker confirmation, each message carrying x-replay-id, x-original-message-id and a
traceparent of the run's trace (invariants 2 and 3), records every outcome in the ledger and
ends verified."""

from __future__ import annotations

import pytest

from recovery.brokers.registry import adapter_for
from recovery.models import AttemptState, LedgerEntry, PlanItem, ReplayRun, RunState
from recovery.replay.engine import Worker
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _drain(harness, target, expected: int) -> list:
    adapter = adapter_for(harness.broker, timeout=10)
    address = harness.target_address(target)  # once: a Kafka address names a fresh reader group
    got = []
    try:
        for _ in range(20):
            batch = adapter.receive(address, max_messages=100, wait_seconds=2)
            adapter.remove(address, batch)
            got += batch
            if len(got) >= expected:
                break
    finally:
        adapter.close()
    return got


def _header(message, name: str) -> str:
    value = message.headers.get(name)
    return value.get("StringValue") if isinstance(value, dict) else value


def test_a_run_publishes_every_letter_once_with_its_identity_headers(harness, make_user, test_redis) -> None:
    dlq, letters = captured_letters(harness, 25)
    target = harness.target()
    plan, _author = approved_plan(harness, dlq, target, make_user)
    run = start(plan, make_user)
    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED
    run = ReplayRun.objects.get(pk=run.pk)
    assert (run.state, run.published, run.failed, run.total) == (RunState.COMPLETED_NOT_VERIFIED, 25, 0, 25)
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.PUBLISHED}

    received = _drain(harness, target, 25)
    replay_ids = {item.letter_id: item.replay_id for item in PlanItem.objects.filter(plan=plan)}
    assert sorted(_header(m, "x-replay-id") for m in received) == sorted(replay_ids.values())
    assert sorted(m.body for m in received) == sorted(bytes(letter.body) for letter in letters)
    for message in received:
        traceparent = _header(message, "traceparent")
        assert traceparent.split("-")[1] == run.trace_id and len(traceparent.split("-")[2]) == 16
        assert _header(message, "x-original-message-id")
        assert "x-death" not in message.headers


def test_a_canary_publishes_its_size_then_waits_for_its_window(harness, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(harness, 12)
    plan, _ = approved_plan(harness, dlq, harness.target(), make_user, canary_count=5, canary_window_seconds=3600)
    run = start(plan, make_user)
    worker = Worker(run.pk, 0)
    # The worker stops itself when told to; tell it once the canary is out.
    import threading

    def pause_when_canary_done() -> None:
        from django.db import connection

        from tests.helpers import wait_until

        try:
            wait_until(lambda: ReplayRun.objects.get(pk=run.pk).phase == "canary-window", timeout=30)
            ReplayRun.objects.filter(pk=run.pk).update(control="pause", state=RunState.PAUSED)
        finally:
            connection.close()

    threading.Thread(target=pause_when_canary_done, daemon=True).start()
    worker.run()
    run.refresh_from_db()
    assert run.published == 5 and run.phase == "canary-window"
    assert LedgerEntry.objects.filter(run=run, state=AttemptState.PENDING).count() == 7


def test_a_worker_connects_to_its_target_before_taking_tokens(rabbit, make_user, test_redis, monkeypatch) -> None:
    """A connection opened between a grant and its send delays that send (invariant 5: at 10 msg/s
    two late first sends crowded one second to 120% of plan), so the worker opens it first."""
    from recovery.replay.limiter import RateLimiter

    dlq, _letters = captured_letters(rabbit, 3)
    plan, _ = approved_plan(rabbit, dlq, rabbit.target(), make_user)
    run = start(plan, make_user)
    worker = Worker(run.pk, 0)
    prepared_at_grants = []
    acquire = RateLimiter.wait_and_acquire

    def noting(self, *args, **kwargs):
        prepared_at_grants.append(set(worker.prepared))
        return acquire(self, *args, **kwargs)

    monkeypatch.setattr(RateLimiter, "wait_and_acquire", noting)
    assert worker.run() == RunState.COMPLETED_NOT_VERIFIED
    assert prepared_at_grants, "the worker took no tokens"
    assert all(rabbit.broker.pk in {broker for broker, _name, _vhost in seen} for seen in prepared_at_grants)
