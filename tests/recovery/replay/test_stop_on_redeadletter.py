"""A stop condition in action, end to end on the real RabbitMQ: the target's consumer rejects
everything, the broker dead-letters it back to the DLQ, capture brings it in carrying this
run's x-replay-id, and the run pauses on its own within the window, with the reason shown."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.urls import reverse

from recovery.brokers.base import Target
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import CaptureTrigger, DeadLetter, ReplayRun, RunState
from recovery.permissions import Role
from tests.brokers.harness import RabbitHarness
from tests.helpers import JobRunner, wait_until
from tests.namespace import unique
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _rejecting_consumer(rabbit: RabbitHarness, queue: str, stop: threading.Event) -> None:
    """The target's application: it fails every message, so the broker dead-letters it."""
    conn, channel = rabbit._channel()
    try:
        for method, _props, _body in channel.consume(queue, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is not None:
                channel.basic_reject(method.delivery_tag, requeue=False)
        channel.cancel()
    finally:
        conn.close()


def _capture_loop(dlq, stop: threading.Event) -> None:
    """What the scheduler does: capture the DLQ often. The pass asks for classification jobs,
    which the job runners perform (classification reads the x-replay-id)."""
    try:
        while not stop.is_set():
            requested = capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI)
            capture_pass_run(pass_id=requested.pk)
            time.sleep(0.3)
    finally:
        connection.close()


def test_a_run_whose_messages_come_back_pauses_itself_with_the_reason(
    rabbit, make_user, client_for, test_redis, settings
) -> None:
    dlq, _letters = captured_letters(rabbit, 200)
    work = unique("work", 8)
    conn, channel = rabbit._channel()
    channel.queue_declare(work, durable=True, arguments={"x-dead-letter-exchange": "",
                                                         "x-dead-letter-routing-key": dlq.address})  # fmt: skip
    conn.close()
    rabbit.queues.append(work)
    condition = {"condition": "redeadletter_rate", "max_percent": 10, "window_s": 10, "min_published": 5}
    plan, _ = approved_plan(rabbit, dlq, Target(name="", routing_key=work), make_user, rate_per_second=20,
                            batch_size=2, stop_conditions=[condition])  # fmt: skip
    settings.RECOVERY_JOB_BACKEND = "rq"
    runners = [JobRunner(), JobRunner()]  # the run's worker job holds one; classification jobs use the other
    for runner in runners:
        runner.start()
    run = start(plan, make_user)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_rejecting_consumer, args=(rabbit, work, stop), daemon=True),
        threading.Thread(target=_capture_loop, args=(dlq, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        paused = wait_until(lambda: ReplayRun.objects.get(pk=run.pk).state == RunState.PAUSED, timeout=30)
    finally:
        stop.set()
        ReplayRun.objects.filter(pk=run.pk, state=RunState.RUNNING).update(control="abort", state=RunState.ABORTED)
        for thread in threads:
            thread.join(timeout=15)
        for runner in runners:
            runner.stop()
    assert not [e for runner in runners for e in runner.errors]
    run.refresh_from_db()
    assert paused, f"the run did not pause: {run.state}, {run.published} published"
    assert "redeadletter_rate" in run.stop_reason and "re-dead-letter rate" in run.stop_reason
    assert run.published < run.total, "it stopped well before the end"
    assert DeadLetter.objects.filter(replay_id__startswith="r").exists(), "returned messages carry their replay id"
    page = client_for(Role.VIEWER).get(reverse("run-detail", args=[run.pk])).content.decode()
    assert 'data-testid="stop-reason"' in page and "re-dead-letter rate" in page
