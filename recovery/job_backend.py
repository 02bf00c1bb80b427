"""The only place that knows which job backend runs background work (RECOVERY_JOB_BACKEND).

Jobs are plain functions in recovery.jobs that take ids. ``enqueue`` sends one after the current
database transaction commits (so a job never starts before the row it reads exists), through RQ
by default or Celery; ``run_job`` is the single Celery task that calls such a function by path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

JOBS_MODULE = "recovery.jobs"
CELERY_TASK_NAME = "recovery.run_job"


def job_path(func: Callable[..., Any]) -> str:
    path = f"{func.__module__}.{func.__name__}"
    if func.__module__ != JOBS_MODULE:
        raise ValueError(f"{path} is not a job: jobs live in {JOBS_MODULE}")
    return path


def enqueue(func: Callable[..., Any], *args: Any, queue: str = "default") -> None:
    """Send ``func(*args)`` to the configured backend once the surrounding transaction commits."""
    if queue not in settings.RECOVERY_JOB_QUEUES:
        raise ValueError(f"unknown job queue {queue!r}")
    transaction.on_commit(partial(_send, job_path(func), list(args), queue))


def _send(path: str, args: list[Any], queue: str) -> None:
    if settings.RECOVERY_JOB_BACKEND == "celery":
        from console.celery import app

        celery_queue = settings.CELERY_TASK_DEFAULT_QUEUE if queue == "default" else f"recovery-{queue}"
        app.send_task(CELERY_TASK_NAME, args=[path, args], queue=celery_queue)
    else:
        import django_rq

        django_rq.get_queue(queue).enqueue(path, *args)


def run_job(path: str, args: list[Any]) -> Any:
    """Call the job at ``path``; refuses anything outside recovery.jobs (the path travels through
    Redis, so it must not become a way to call arbitrary code)."""
    module, _, name = path.rpartition(".")
    if module != JOBS_MODULE or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"refusing to run {path!r}: not a job in {JOBS_MODULE}")
    return import_string(path)(*args)
