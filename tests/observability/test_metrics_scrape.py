"""/metrics after real work done by real worker processes: an RQ worker (which forks a work horse
per job, each gone when its job ends) captures a DLQ, replays it and captures the replays that
came back; a scrape in this process then finds every count, summed from the dead processes'
files (multiprocess mode), and the worker's logs are JSON lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from recovery.capture.services import capture_pass_request
from recovery.models import DeadLetter, Disposition, ReplayRun, RunState
from recovery.observability import multiproc
from recovery.observability.depth import dlq_depth_reading_due, dlq_depths_record
from recovery.permissions import Role
from recovery.triage.filters import LetterFilter
from recovery.triage.services import letters_triage
from tests.recovery.replay.helpers import approved_plan, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "scrape-token-" + "s" * 32


def _burst_worker() -> list[str]:
    """Run every queued job in a real RQ worker process (each job in its own forked horse)."""
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "RECOVERY_JOB_BACKEND": "rq", "LOG_FORMAT": "json", "LOG_LEVEL": "info"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "rqworker", *settings.RECOVERY_JOB_QUEUES, "--burst"], cwd=ROOT, env=env,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output[-3000:]
    return output.splitlines()


def _scrape(settings) -> dict[tuple[str, frozenset], float]:
    settings.RECOVERY_METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_a_scrape_counts_a_capture_a_run_and_the_replays_that_came_back(
    rabbit, make_user, settings, test_redis
) -> None:
    operator = make_user(Role.OPERATOR)
    dlq = rabbit.make_dlq()
    failed_at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    fault = {"MT-Fault-Timestamp": failed_at, "MT-Fault-InputAddress": "rabbitmq://localhost/orders"}
    rabbit.fill(dlq, [(f'{{"n": {i}}}'.encode(), {"x-seq": str(i), **fault}) for i in range(5)])
    capture_pass_request(actor=operator, dlq=dlq)
    logs = _burst_worker()
    assert DeadLetter.objects.filter(dlq=dlq).count() == 5
    DeadLetter.objects.filter(dlq=dlq).update(disposition=Disposition.REPLAY, classified_by="manual")

    target = rabbit.target()
    plan, _author = approved_plan(rabbit, dlq, target, make_user)
    run = start(plan, make_user)
    logs += _burst_worker()
    assert ReplayRun.objects.get(pk=run.pk).state == RunState.COMPLETED_NOT_VERIFIED

    # The target's consumer failed every replayed message: its queue is now a DLQ of its own.
    back = rabbit.dlq_at(target.routing_key)
    capture_pass_request(actor=operator, dlq=back)
    logs += _burst_worker()

    values = _scrape(settings)

    def value(name: str, **labels: str) -> float | None:
        return values.get((name, frozenset(labels.items())))

    assert value("recovery_letters_captured_total", dlq=dlq.name) == 5
    assert value("recovery_letters_captured_total", dlq=back.name) == 5
    assert value("recovery_letters_redeadlettered_total", dlq=back.name) == 5
    assert value("recovery_letters_redeadlettered_total", dlq=dlq.name) == 0
    assert value("recovery_capture_passes_total", dlq=dlq.name, outcome="succeeded") == 1
    assert value("recovery_replay_messages_total", broker=rabbit.broker.name, outcome="published") == 5
    assert value("recovery_replay_batch_seconds_count", broker=rabbit.broker.name) >= 1
    assert value("recovery_dlq_depth", dlq=dlq.name, broker_kind="rabbitmq") == 0
    assert 600 <= value("recovery_dlq_oldest_age_seconds", dlq=dlq.name) < 3600  # failed 10 minutes ago
    assert value("recovery_jobs_total", job="replay_worker", outcome="succeeded") >= 1
    assert value("recovery_replay_runs", state="completed_not_verified") >= 1
    assert all(value("recovery_job_queue_length", queue=queue) == 0 for queue in settings.RECOVERY_JOB_QUEUES)
    assert value("recovery_metrics_source_up", source="database") == 1

    # Discarding letters counts them (no label: the delta around this process's own discard).
    before = value("recovery_letters_discarded_total") or 0
    letters_triage(
        actor=operator,
        selection=LetterFilter(ids=tuple(back.letters.values_list("pk", flat=True))),
        kind="discard",
        reason="replays came back",
    )
    assert (_scrape(settings).get(("recovery_letters_discarded_total", frozenset())) or 0) - before == 5

    # The horses that did the work are gone; the scrape folded their files into the archives.
    folder = multiproc.directory()
    dead = [p for p in Path(folder).glob("*.db") if multiproc._dead_here(p.stem.rpartition("_")[2])]  # noqa: SLF001
    assert dead == []

    # The worker's lines, its own and its jobs', are JSON lines with the same fields as the web's.
    records = [json.loads(line) for line in logs if line.strip()]
    assert records and all({"time", "level", "logger", "message", "request_id", "run_id"} <= set(r) for r in records)
    assert any(r["logger"] == "rq.worker" for r in records)


def test_the_periodic_job_reads_the_depth_of_dlqs_without_a_scheduled_capture(rabbit, settings, test_redis) -> None:
    manual = rabbit.make_dlq(capture_interval=0)
    scheduled = rabbit.make_dlq(capture_interval=60)
    rabbit.fill(manual, [(b"{}", {}) for _ in range(3)])
    assert dlq_depth_reading_due() and not dlq_depth_reading_due()  # once per interval, across schedulers
    assert dlq_depths_record() >= 1

    values = _scrape(settings)
    assert values[("recovery_dlq_depth", frozenset({"dlq": manual.name, "broker_kind": "rabbitmq"}.items()))] == 3
    assert ("recovery_dlq_depth", frozenset({"dlq": scheduled.name, "broker_kind": "rabbitmq"}.items())) not in values
