"""The same job functions run under RQ (default) and Celery, through real worker processes
against the real Redis; the scheduler process of each backend ticks the scheduler job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

from recovery.job_backend import enqueue, run_job
from recovery.jobs import scheduler_tick, worker_heartbeat
from recovery.models import WorkerHeartbeat
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


RQ_WORKER = [str(VENV_BIN / "python"), "manage.py", "rqworker", "default"]
CELERY_WORKER = [
    str(VENV_BIN / "celery"),
    "-A",
    "console",
    "worker",
    "-Q",
    "recovery-default",
    "--pool",
    "solo",
    "--loglevel",
    "INFO",
]


@pytest.mark.django_db(transaction=True)
def test_rq_worker_runs_an_enqueued_job(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    enqueue(worker_heartbeat, "rq")
    result = subprocess.run([*RQ_WORKER, "--burst"], cwd=ROOT, env=_env("rq"), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert _beats("rq") == 1


@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_the_same_job(settings, test_redis, tmp_path) -> None:
    settings.RECOVERY_JOB_BACKEND = "celery"
    enqueue(worker_heartbeat, "celery")
    with _process(CELERY_WORKER, "celery", tmp_path / "celery.log"):
        ran = wait_until(lambda: _beats("celery") == 1, timeout=60)
    assert ran, (tmp_path / "celery.log").read_text()[-3000:]


@pytest.mark.django_db(transaction=True)
def test_rq_cron_scheduler_ticks_and_a_worker_beats(test_redis, tmp_path) -> None:
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
    sent = [callback.args[0] for callback in callbacks]  # functools.partial(_send, path, args, queue)
    periodic = ("worker_heartbeat", "audit_checkpoint", "capture_schedule", "replay_watchdog", "drill_schedule")
    assert {f"recovery.jobs.{name}" for name in periodic} <= set(sent)
    assert test_redis.llen("rq:queue:default") == 0
    for callback in callbacks:
        callback()
    assert test_redis.llen("rq:queue:default") == len(sent)


def test_only_functions_in_recovery_jobs_can_be_enqueued() -> None:
    with pytest.raises(ValueError, match="not a job"):
        enqueue(os.getcwd)


@pytest.mark.parametrize(
    "path", ["os.system", "recovery.jobs._private", "recovery.jobs.x; import os", "subprocess.run"]
)
def test_run_job_refuses_paths_outside_recovery_jobs(path: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        run_job(path, [])
