"""Celery application for RECOVERY_JOB_BACKEND=celery: one task that runs a recovery job by path,
and a beat schedule that ticks the scheduler like RQ cron does."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="recovery.run_job")
def run_job(path: str, args: list[Any]) -> Any:
    from recovery.job_backend import run_job as run

    return run(path, args)


@app.on_after_configure.connect
def _schedule(sender: Celery, **_: Any) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        settings.RECOVERY_SCHEDULER_INTERVAL,
        run_job.s("recovery.jobs.scheduler_tick", []),
        name="scheduler tick",
    )
