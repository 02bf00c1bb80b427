"""Separate queues: each kind of work has its own workers, so a replay run does not wait behind
scheduled capture passes (it used to start 20 s late behind them on the one shared queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db.models import Min
from rq import Queue, Worker

from recovery.capture.services import capture_due_passes_enqueue
from recovery.models import CapturePass, DeadLetterQueue, LedgerEntry, ReplayRun
from tests.brokers.harness import RabbitHarness
from tests.factories import DeadLetterQueueFactory
from tests.helpers import wait_until
from tests.recovery.replay.helpers import approved_plan, captured_letters, start
from tests.recovery.test_job_backends import VENV_BIN, _process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _rq_worker(queue: str, log: Path) -> Any:
    """A real `manage.py rqworker QUEUE` process on the test database and Redis, as `make run`
    starts one per queue."""
    return _process([str(VENV_BIN / "python"), "manage.py", "rqworker", queue], "rq", log)


@pytest.mark.timing  # a latency bound: measured alone, in the serial phase
def test_a_replay_run_starts_within_a_second_while_100_capture_passes_are_queued(
    rabbit: RabbitHarness, make_user: Any, settings: Any, test_redis: Any, tmp_path: Path
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    dlq, _letters = captured_letters(rabbit, 20)
    DeadLetterQueue.objects.filter(pk=dlq.pk).update(capture_interval=0)  # the replay's own DLQ: not scheduled
    plan, _author = approved_plan(rabbit, dlq, rabbit.target(), make_user, rate_per_second=100, batch_size=5)
    # 100 scheduled capture passes of DLQs whose queues are gone from the broker: each fails on its own
    for n in range(100):
        DeadLetterQueueFactory(broker=rabbit.broker, address=f"{dlq.address}-gone-{n}", capture_interval=60)
    passes = capture_due_passes_enqueue()
    assert len(passes) == 100 and test_redis.llen("rq:queue:capture") >= 100  # and the first capture's classify jobs

    with (
        _rq_worker("capture", tmp_path / "capture.log"),
        _rq_worker("replay", tmp_path / "replay.log"),
    ):
        listening = wait_until(lambda: all(Worker.count(queue=Queue(q, connection=test_redis)) for q in
                                           ("capture", "replay")), timeout=30)  # fmt: skip
        assert listening, (tmp_path / "replay.log").read_text()[-2000:]
        assert wait_until(lambda: CapturePass.objects.filter(state="running").exists(), timeout=30), "capture is busy"
        run = start(plan, make_user)
        first = wait_until(lambda: LedgerEntry.objects.filter(run=run, published_at__isnull=False).exists(), timeout=30)
        capture_backlog = test_redis.llen("rq:queue:capture")
    assert first, (tmp_path / "replay.log").read_text()[-3000:]
    run = ReplayRun.objects.get(pk=run.pk)
    first_publish = LedgerEntry.objects.filter(run=run).aggregate(first=Min("published_at"))["first"]
    waited = (first_publish - run.started_at).total_seconds()
    print(f"first message {waited:.3f} s after the run started; capture backlog {capture_backlog}")
    assert waited < 1.0, f"the run's first message left {waited:.2f} s after it started"
    assert capture_backlog > 0, "the capture passes were still queued while the replay ran"
