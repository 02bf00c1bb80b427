"""The same registered jobs run under RQ (default) and Celery, through real worker processes
against the real Redis; the scheduler process of each backend ticks the scheduler job; workers of
either backend run registered job names only, and refuse (and log) anything else put into Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django.conf import settings as django_settings
from django.db import connection
from rq import Queue
from rq.serializers import DefaultSerializer, JSONSerializer

from console.celery import app as celery_app
from recovery.jobs.definitions import scheduler_tick
from recovery.jobs.queue import enqueue
from recovery.jobs.registry import UnknownJob, run_received
from recovery.jobs.rq_worker import RegisteredJobSimpleWorker
from recovery.models import JobState, TriageJob, TriageJobKind, WorkerHeartbeat
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _env(backend: str) -> dict[str, str]:
    """The environment of a worker process: the test database, the test Redis, this backend."""
    env = dict(os.environ)
    db = connection.settings_dict
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["RECOVERY_JOB_BACKEND"] = backend
    env["RECOVERY_SCHEDULER_INTERVAL"] = "1"
    return env


@contextmanager
def _process(args: list[str], backend: str, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=_env(backend), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def _beats(backend: str) -> int:
    return sum(WorkerHeartbeat.objects.filter(backend=backend).values_list("beats", flat=True))


# One worker on every queue, as the tests need (make run starts one per queue).
RQ_WORKER = [str(VENV_BIN / "python"), "manage.py", "rqworker", *django_settings.RECOVERY_JOB_QUEUES]
CELERY_WORKER = [
    str(VENV_BIN / "celery"),
    "-A",
    "console",
    "worker",
    "-Q",
    ",".join(f"recovery-{queue}" for queue in django_settings.RECOVERY_JOB_QUEUES),
    "--pool",
    "solo",
    "--loglevel",
    "INFO",
]


@pytest.mark.django_db(transaction=True)
def test_rq_worker_runs_an_enqueued_job(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    enqueue("worker_heartbeat", "rq")
    result = subprocess.run([*RQ_WORKER, "--burst"], cwd=ROOT, env=_env("rq"), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert _beats("rq") == 1


@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_the_same_job(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "celery"
    enqueue("worker_heartbeat", "celery")
    with _process(CELERY_WORKER, "celery", tmp_path / "celery.log"):
        ran = wait_until(lambda: _beats("celery") == 1, timeout=60)
    assert ran, (tmp_path / "celery.log").read_text()[-3000:]


@pytest.mark.django_db(transaction=True)
def test_rq_scheduler_ticks_and_a_worker_beats(test_redis, tmp_path) -> None:
    scheduler = [str(VENV_BIN / "python"), "manage.py", "scheduler"]
    with _process(scheduler, "rq", tmp_path / "cron.log"), _process(RQ_WORKER, "rq", tmp_path / "worker.log"):
        ran = wait_until(lambda: _beats("rq") >= 2, timeout=60)
    assert ran, (tmp_path / "cron.log").read_text()[-2000:] + (tmp_path / "worker.log").read_text()[-2000:]
    assert "Traceback" not in (tmp_path / "cron.log").read_text(), "the scheduler must stop cleanly"
    # RQ forks a new process per job; the heartbeat is keyed by the worker, not the process.
    assert WorkerHeartbeat.objects.filter(backend="rq").count() == 1


@pytest.mark.django_db(transaction=True)
def test_celery_beat_ticks_and_a_worker_beats(test_redis, tmp_path) -> None:
    beat = [
        str(VENV_BIN / "celery"),
        "-A",
        "console",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(tmp_path / "beat-schedule"),
    ]
    with (
        _process(beat, "celery", tmp_path / "beat.log"),
        _process(CELERY_WORKER, "celery", tmp_path / "w.log"),
    ):
        ran = wait_until(lambda: _beats("celery") >= 2, timeout=60)
    assert ran, (tmp_path / "beat.log").read_text()[-2000:] + (tmp_path / "w.log").read_text()[-2000:]
    assert WorkerHeartbeat.objects.filter(backend="celery").count() == 1


@pytest.mark.django_db
def test_a_job_is_sent_only_when_the_transaction_commits(
    settings, test_redis, django_capture_on_commit_callbacks
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        scheduler_tick()
    sent = [callback.args[0] for callback in callbacks]  # functools.partial(send, name, args, queue)
    periodic = (
        "worker_heartbeat", "audit_checkpoint", "capture_schedule", "replay_watchdog", "job_watchdog", "drill_schedule"
    )  # fmt: skip
    assert set(periodic) <= set(sent)
    assert test_redis.llen("rq:queue:periodic") == 0
    for callback in callbacks:
        callback()
    assert test_redis.llen("rq:queue:periodic") == len(sent)


def test_only_registered_jobs_can_be_enqueued() -> None:
    for name in ("os.getcwd", "recovery.jobs.definitions.capture_dlq", "_worker_name", ""):
        with pytest.raises(UnknownJob, match="not a registered job"):
            enqueue(name)


@pytest.mark.parametrize(
    "name", ["os.system", "recovery.jobs.definitions._worker_name", "capture_dlq; import os", "subprocess.run", None]
)
def test_a_worker_refuses_names_that_are_not_registered_jobs(name: str | None) -> None:
    with pytest.raises(UnknownJob, match="refusing"):
        run_received(name, [])


def test_a_worker_refuses_arguments_that_are_not_a_list() -> None:
    with pytest.raises(UnknownJob, match="not a list"):
        run_received("worker_heartbeat", "rq")


def _foreign_jobs_into_rq(client: Any, marker: Path) -> None:
    """What an attacker with write access to Redis could put on a queue: a job naming a function
    by path, once as JSON and once pickled (the RQ default a stock worker would unpickle)."""
    command = f"touch {marker}"
    for serializer in (JSONSerializer, DefaultSerializer):
        Queue("periodic", connection=client, serializer=serializer).enqueue_call(func="os.system", args=[command])


@pytest.mark.django_db(transaction=True)
def test_an_rq_worker_refuses_a_foreign_job_path_and_goes_on(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    marker = tmp_path / "pwned"
    _foreign_jobs_into_rq(test_redis, marker)
    enqueue("worker_heartbeat", "rq")  # a registered job behind them still runs
    result = subprocess.run(
        [*RQ_WORKER[:3], "periodic", "--burst"], cwd=ROOT, env=_env("rq"), capture_output=True, timeout=60
    )
    log = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, log[-3000:]
    assert not marker.exists(), "a foreign function path must never run"
    assert "refusing job 'os.system': not a registered job" in log, log[-3000:]
    assert Queue("periodic", connection=test_redis).failed_job_registry.count == 2
    assert _beats("rq") == 1


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_refuses_a_foreign_job_and_goes_on(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "celery"
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    celery_app.send_task("recovery.run_job", args=["os.system", [command]], queue="recovery-periodic")
    celery_app.send_task("os.system", args=[command], queue="recovery-periodic")  # not a Celery task either
    enqueue("worker_heartbeat", "celery")
    log_file = tmp_path / "celery.log"
    with _process(CELERY_WORKER, "celery", log_file):
        ran = wait_until(lambda: _beats("celery") == 1, timeout=60)
    log = log_file.read_text()
    assert ran, log[-3000:]
    assert not marker.exists(), "a foreign job must never run"
    assert "refusing job 'os.system': not a registered job" in log, log[-3000:]
    assert "Received unregistered task of type 'os.system'" in log, log[-3000:]


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_several_queues_serves_them_in_turn(settings, test_redis) -> None:
    """Strict priority would let a busy periodic queue starve the bulk queue behind it."""
    settings.RECOVERY_JOB_BACKEND = "rq"
    for _ in range(3):
        enqueue("worker_heartbeat", "rq")
    TriageJob.objects.create(kind=TriageJobKind.RECLASSIFY)  # nothing to re-classify: a quick job
    enqueue("reclassify", TriageJob.objects.get().pk)
    worker = django_rq.get_worker("periodic", "bulk", worker_class=RegisteredJobSimpleWorker)
    worker.work(burst=True, max_jobs=2)
    assert TriageJob.objects.get().state == JobState.SUCCEEDED, "the bulk job ran among the first two"
    assert _beats("rq") == 1
