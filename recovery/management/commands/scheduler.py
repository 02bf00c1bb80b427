"""`manage.py scheduler`: the RQ scheduler process (RQ cron with recovery.cron).

django-rq's `rqcron` with our configuration as the default, exiting cleanly on SIGINT/SIGTERM
(rqcron lets RQ's StopRequested escape as a traceback). Under RECOVERY_JOB_BACKEND=celery the
scheduler is `celery -A console beat` instead.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django_rq.management.commands.rqcron import Command as RqCronCommand
from rq.exceptions import StopRequested


class Command(RqCronCommand):
    help = "Run the scheduler (RQ cron with recovery.cron); under Celery use `celery -A console beat`."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        for action in parser._actions:  # noqa: SLF001 - make the config path optional
            if action.dest == "config_path":
                action.nargs = "?"
                action.default = "recovery.cron"

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.RECOVERY_JOB_BACKEND != "rq":
            raise CommandError("RECOVERY_JOB_BACKEND is celery: run `celery -A console beat` instead")
        try:
            super().handle(*args, **options)
        except StopRequested:
            self.stdout.write("scheduler stopped")
