"""Celery application for RECOVERY_JOB_BACKEND=celery: one task that runs a registered recovery job
by name (recovery.jobs.registry refuses any other name), and a beat schedule that sends the
scheduler's tick to the periodic queue, as ``manage.py scheduler`` does under RQ.

Celery itself refuses messages for task names it does not know; ``recovery.run_job`` refuses job
names the registry does not know. Messages are JSON only.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="recovery.run_job")
def run_job(name: str, args: list[Any]) -> Any:
    from recovery.jobs.registry import run_received  # after Django is set up in the worker

    return run_received(name, args)


@app.on_after_configure.connect
def _schedule(sender: Celery, **_: Any) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        settings.RECOVERY_SCHEDULER_INTERVAL,
        run_job.s("scheduler_tick", []).set(queue="recovery-periodic"),
        name="scheduler tick",
    )
