"""Replay under failure, against the real brokers (invariants 2, 3 and 4): workers SIGKILLed
mid-batch several times in one run, RabbitMQ restarted mid-run, Redis restarted mid-run. Every
letter of the plan reaches the target; none is lost; every duplicate delivery carries an
x-replay-id that was already delivered (counted at a consumer of the target)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from recovery.brokers.registry import adapter_for
from recovery.models import LedgerEntry, PlanItem, ReplayRun, RunState
from tests.helpers import wait_until
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

ROOT = Path(__file__).resolve().parents[3]
# The workers' lease (RECOVERY_REPLAY_LEASE_SECONDS): a dead worker's rows come back after it. It must
# outlast a live worker's slowest batch, or a batch claimed ahead expires while the one before it is
# still being sent (LocalStack on a machine busy with parallel tests) and goes out twice.
LEASE = 5
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.fault]


def _env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "RECOVERY_REPLAY_LEASE_SECONDS": str(LEASE),
        **extra,
    }


def _worker(run: ReplayRun, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "replay_worker", str(run.pk)], cwd=ROOT, env=_env(**extra),
        capture_output=True, timeout=180,
    )  # fmt: skip


def _deliveries(harness, target, at_least: int) -> Counter:
    """x-replay-id of every message on the target, read until it stays quiet."""
    adapter = adapter_for(harness.broker, timeout=10)
    address = harness.target_address(target)  # once: a Kafka address names a fresh reader group
    seen: Counter = Counter()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            batch = adapter.receive(address, max_messages=200, wait_seconds=2)
            for message in batch:
                value = message.headers.get("x-replay-id")
                seen[value.get("StringValue") if isinstance(value, dict) else value] += 1
            adapter.remove(address, batch)
            if not batch and sum(seen.values()) >= at_least:
                break  # quiet for one whole wait after the expected count
    finally:
        adapter.close()
    return seen


def _assert_delivered_once_or_more(plan, seen: Counter) -> int:
    expected = set(PlanItem.objects.filter(plan=plan, state="included").values_list("replay_id", flat=True))
    assert set(seen) == expected, f"lost: {len(expected - set(seen))}, unknown: {len(set(seen) - expected)}"
    return sum(seen.values()) - len(seen)  # duplicates: each carries a replay id delivered before


def test_workers_killed_mid_batch_three_times_lose_nothing(harness, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(harness, 30)
    target = harness.target()
    plan, _ = approved_plan(harness, dlq, target, make_user, batch_size=5, rate_per_second=1000)
    run = start(plan, make_user)
    for _ in range(3):
        killed = _worker(run, RECOVERY_FAULT_POINT="replay.after_publish")
        assert killed.returncode == -9, killed.stderr.decode()[-2000:]
        time.sleep(LEASE + 0.5)  # the dead worker's lease runs out; its rows become claimable
    done = _worker(run)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    run.refresh_from_db()
    assert (run.state, run.published, run.failed) == (RunState.COMPLETED_NOT_VERIFIED, 30, 0)
    seen = _deliveries(harness, target, 30)
    duplicates = _assert_delivered_once_or_more(plan, seen)
    assert duplicates == 15, "each killed worker's published batch was published again, with the same replay ids"
    # re-sent (issue 15) counts the rows a lost worker held, once each however often they went out again:
    # every letter delivered twice or more is among them
    resent = set(LedgerEntry.objects.filter(run=run, resent=True).values_list("item__replay_id", flat=True))
    assert {replay_id for replay_id, n in seen.items() if n > 1} <= resent
    assert run.resent == len(resent) > 0


def test_workers_killed_while_recording_lose_nothing(harness, make_user, test_redis) -> None:
    """SIGKILL on the ledger thread while it records a batch and the worker publishes the next:
    both batches' rows stay leased and go out again with the same replay ids, nothing more."""
    dlq, _letters = captured_letters(harness, 30)
    target = harness.target()
    plan, _ = approved_plan(harness, dlq, target, make_user, batch_size=5, rate_per_second=1000)
    run = start(plan, make_user)
    for _ in range(2):
        killed = _worker(run, RECOVERY_FAULT_POINT="replay.recording")
        assert killed.returncode == -9, killed.stderr.decode()[-2000:]
        time.sleep(LEASE + 0.5)
    done = _worker(run)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    run.refresh_from_db()
    assert (run.state, run.published, run.failed) == (RunState.COMPLETED_NOT_VERIFIED, 30, 0)
    duplicates = _assert_delivered_once_or_more(plan, _deliveries(harness, target, 30))
    assert 2 * 5 <= duplicates <= 2 * 2 * 5, "per kill: the batch being recorded, at most one more in flight"


def _restart_mid_run(rabbit, make_user, service: str) -> None:
    dlq, _letters = captured_letters(rabbit, 150)
    target = rabbit.target()
    plan, _ = approved_plan(rabbit, dlq, target, make_user, batch_size=5, rate_per_second=50)
    run = start(plan, make_user)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "replay_worker", str(run.pk)], cwd=ROOT, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(lambda: ReplayRun.objects.get(pk=run.pk).published >= 20, timeout=30)
        script = str(ROOT / "scripts" / "services.sh")
        subprocess.run([script, "down", service], cwd=ROOT, check=True, capture_output=True, timeout=120)
        time.sleep(2)
        subprocess.run([script, "up", service], cwd=ROOT, check=True, capture_output=True, timeout=180)
        _out, err = worker.communicate(timeout=180)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err.decode()[-3000:]
    run.refresh_from_db()
    assert (run.state, run.published, run.failed) == (RunState.COMPLETED_NOT_VERIFIED, 150, 0)
    assert run.events.filter(kind__in=("target-unreachable", "limiter-unavailable")).exists(), "the outage was seen"
    _assert_delivered_once_or_more(plan, _deliveries(rabbit, target, 150))


@pytest.mark.serial  # restarts the RabbitMQ every test uses
def test_a_rabbitmq_restart_mid_run_loses_nothing(rabbit, make_user, test_redis) -> None:
    _restart_mid_run(rabbit, make_user, "rabbitmq")


@pytest.mark.serial  # restarts the Redis every test uses
def test_a_redis_restart_mid_run_loses_nothing(rabbit, make_user, test_redis) -> None:
    _restart_mid_run(rabbit, make_user, "redis")
