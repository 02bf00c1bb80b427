"""Sending jobs: the only place that knows which backend runs them (RECOVERY_JOB_BACKEND).

``enqueue(name, *args)`` sends a registered job after the current transaction commits (so a job
never starts before the row it reads exists), to the job's own queue: through RQ by default, with
JSON-serialised arguments (ids and strings only; nothing a worker would unpickle), or through
Celery as the one task ``recovery.run_job`` carrying the job's name.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import django_rq
from django.conf import settings
from django.db import transaction

from console.celery import app as celery_app
from recovery.jobs.registry import JobQueue, registered

CELERY_TASK_NAME = "recovery.run_job"


def celery_queue(queue: str) -> str:
    """The Celery (Redis list) name of one of our queues."""
    return f"recovery-{queue}"


def enqueue(name: str, *args: Any) -> None:
    """Send job ``name`` with ``args`` to its queue once the surrounding transaction commits.
    Raises ``UnknownJob`` at once for a name that is not registered."""
    job = registered(name)
    transaction.on_commit(partial(send, job.name, list(args), job.queue))


def send(name: str, args: list[Any], queue: JobQueue | str) -> None:
    """Send now, outside any transaction (the scheduler's tick, or an on-commit callback)."""
    queue = JobQueue(queue)
    if settings.RECOVERY_JOB_BACKEND == "celery":
        celery_app.send_task(CELERY_TASK_NAME, args=[name, args], queue=celery_queue(queue))
    else:
        django_rq.get_queue(queue.value).enqueue_call(func=name, args=args)
