"""The replay engine under both job backends, with real worker processes (issue 6: "the same plan
executes under RQ and under Celery"). run_start enqueues its ``replay_worker`` jobs through
recovery.jobs.queue once its transaction commits; a real ``rqworker`` or Celery worker process,
pointed at the test database and the test Redis, takes them and runs the plan to verified; a
reader of the RabbitMQ target queue then finds every letter once, carrying its x-replay-id.

Also the watchdog (the replay_watchdog job) against the real Redis: a running run's worker
whose heartbeat is missing is re-enqueued exactly once, even by two concurrent calls (SET NX).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.db import connection, connections

from recovery.brokers.registry import adapter_for
from recovery.jobs import definitions as jobs
from recovery.models import RUN_ACTIVE, PlanItem, ReplayRun, RunEvent, RunState
from recovery.replay import engine
from tests.brokers.harness import RabbitHarness
from tests.helpers import wait_until
from tests.recovery.replay.helpers import approved_plan, captured_letters, start
from tests.recovery.test_job_backends import CELERY_WORKER, RQ_WORKER

ROOT = Path(__file__).resolve().parents[3]
LETTERS = 12
WORKERS = {"rq": RQ_WORKER, "celery": CELERY_WORKER}
# Where each backend keeps the jobs it has not handed out yet (both on the test Redis).
QUEUE_KEYS = {"rq": "rq:queue:replay", "celery": "recovery-replay"}

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _env(backend: str) -> dict[str, str]:
    """A worker process's environment: the test database, the test Redis (REDIS_URL, set for
    the suite by tests/environment.py), this backend."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "RECOVERY_JOB_BACKEND": backend,
    }


@contextmanager
def _worker_process(backend: str, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            WORKERS[backend], cwd=ROOT, env=_env(backend), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _replay_ids_on(rabbit: RabbitHarness, target: Any, expected: int) -> Counter:
    """The x-replay-id of every message on the target queue, read until it stays quiet."""
    adapter = adapter_for(rabbit.broker, timeout=10)
    address = rabbit.target_address(target)
    seen: Counter = Counter()
    try:
        for _ in range(10):
            batch = adapter.receive(address, max_messages=100, wait_seconds=1)
            seen.update(message.headers.get("x-replay-id") for message in batch)
            adapter.remove(address, batch)
            if not batch and sum(seen.values()) >= expected:
                break
    finally:
        adapter.close()
    return seen


@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_the_same_plan_runs_to_verified_under_each_backend(
    backend: str, settings: Any, rabbit: RabbitHarness, make_user: Any, test_redis: Any, tmp_path: Path
) -> None:
    settings.RECOVERY_JOB_BACKEND = backend
    dlq, _letters = captured_letters(rabbit, LETTERS)
    target = rabbit.target()
    plan, _author = approved_plan(
        rabbit, dlq, target, make_user, workers=2, batch_size=2, rate_per_second=50,
        verifications=[{"step": "no_redeadletter_within", "seconds": 1}],
    )  # fmt: skip
    queued_before = test_redis.llen(QUEUE_KEYS[backend])
    run = start(plan, make_user)
    queued = test_redis.llen(QUEUE_KEYS[backend]) - queued_before
    assert queued == 2, "one job per worker, enqueued when the start committed"

    def done() -> bool:
        """The run ended and the process took both jobs (worker 1's finds the run over)."""
        ended = ReplayRun.objects.get(pk=run.pk).state not in RUN_ACTIVE
        return ended and test_redis.llen(QUEUE_KEYS[backend]) == 0

    log = tmp_path / f"{backend}.log"
    with _worker_process(backend, log) as proc:
        finished = wait_until(lambda: proc.poll() is not None or done(), timeout=120, interval=0.2)
    run.refresh_from_db()
    assert finished and run.state == RunState.COMPLETED_NOT_VERIFIED, (
        f"{run.state}: {run.stop_reason}\n{log.read_text()[-3000:]}"
    )
    assert (run.published, run.failed) == (LETTERS, 0)
    assert test_redis.llen(QUEUE_KEYS[backend]) == 0, log.read_text()[-3000:]

    seen = _replay_ids_on(rabbit, target, LETTERS)
    expected = set(PlanItem.objects.filter(plan=plan, state="included").values_list("replay_id", flat=True))
    assert len(expected) == LETTERS
    assert seen == Counter(expected), "every letter arrived once, with its x-replay-id"


def test_the_watchdog_re_enqueues_a_silent_worker_once_under_concurrent_calls(
    settings: Any, chk_plan: Any, chk_run: Any, test_redis: Any
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    run = chk_run(chk_plan(workers=2), state=RunState.RUNNING)
    chk_run(chk_plan(workers=1), state=RunState.PAUSED)  # not running: nobody to restart
    test_redis.set(engine._heartbeat_key(run.pk, 1), "alive", ex=engine.HEARTBEAT_TTL)  # worker 1 beats
    queue = django_rq.get_queue("replay")
    both_ready = threading.Barrier(2)
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            both_ready.wait(timeout=10)
            jobs.replay_watchdog()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own database connection

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors

    assert [(job.func_name, tuple(job.args)) for job in queue.get_jobs()] == [("replay_worker", (run.pk, 0))]
    assert RunEvent.objects.filter(run=run, kind="worker-restarted").count() == 1
    assert test_redis.get(engine._heartbeat_key(run.pk, 0)) == b"watchdog"  # claimed until a worker beats
    jobs.replay_watchdog()  # a later tick within the heartbeat TTL: the replacement is on its way
    assert queue.count == 1


def test_the_watchdog_gives_a_just_enqueued_worker_time_to_report(
    settings: Any, rabbit: RabbitHarness, make_user: Any, test_redis: Any
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    dlq, _letters = captured_letters(rabbit, 4)
    plan, _author = approved_plan(rabbit, dlq, rabbit.target(), make_user, workers=2)
    run = start(plan, make_user)  # both worker jobs enqueued on commit; no worker has taken them yet
    queue = django_rq.get_queue("replay")
    assert queue.count == 2

    assert jobs.replay_watchdog() is None and queue.count == 2, "a worker enqueued just now is not lost"
    assert not RunEvent.objects.filter(run=run, kind="worker-restarted").exists()
    assert test_redis.ttl(engine._heartbeat_key(run.pk, 0)) > engine.HEARTBEAT_TTL

    for worker in (0, 1):  # the grace ran out with no heartbeat: the jobs were lost
        test_redis.delete(engine._heartbeat_key(run.pk, worker))
    jobs.replay_watchdog()
    assert queue.count == 4
    assert RunEvent.objects.filter(run=run, kind="worker-restarted").count() == 2


def test_a_worker_that_continues_later_leaves_its_successor_time_to_report(
    settings: Any, rabbit: RabbitHarness, make_user: Any, test_redis: Any, monkeypatch: Any
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    dlq, _letters = captured_letters(rabbit, 40)
    plan, _author = approved_plan(rabbit, dlq, rabbit.target(), make_user, workers=1, rate_per_second=20,
                                  batch_size=1)  # fmt: skip
    run = start(plan, make_user)
    queue = django_rq.get_queue("replay")
    queue.empty()  # this test runs worker 0 itself
    monkeypatch.setattr(engine, "WORKER_SECONDS", 0)  # its job ends after its first batch

    assert engine.Worker(run.pk, 0).run() == "continued"

    assert [(job.func_name, tuple(job.args)) for job in queue.get_jobs()] == [("replay_worker", (run.pk, 0))]
    assert test_redis.get(engine._heartbeat_key(run.pk, 0)) == b"enqueued", "the successor's grace, not deleted"
    jobs.replay_watchdog()
    assert queue.count == 1 and not RunEvent.objects.filter(run=run, kind="worker-restarted").exists()
