"""`manage.py scheduler`: the scheduler process under RQ. Every RECOVERY_SCHEDULER_INTERVAL seconds
it sends the registered ``scheduler_tick`` job to the periodic queue; the tick enqueues whatever
periodic work is due (each piece claims its work, so two schedulers do no harm). It stops cleanly
on SIGINT/SIGTERM. Under RECOVERY_JOB_BACKEND=celery the scheduler is `celery -A console beat`.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from recovery.jobs.queue import send
from recovery.jobs.registry import registered

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Send the scheduler tick to the periodic queue every RECOVERY_SCHEDULER_INTERVAL seconds (RQ)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.RECOVERY_JOB_BACKEND != "rq":
            raise CommandError("RECOVERY_JOB_BACKEND is celery: run `celery -A console beat` instead")
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        tick = registered("scheduler_tick")
        interval = settings.RECOVERY_SCHEDULER_INTERVAL
        self.stdout.write(f"scheduler: {tick.name} to the {tick.queue} queue every {interval} s")
        while not stopping.is_set():
            try:
                send(tick.name, [], tick.queue)
                log.info("sent %s to the %s queue", tick.name, tick.queue)
            except RedisError:
                log.warning("scheduler tick not sent (Redis unavailable); trying again", exc_info=True)
            stopping.wait(interval)
        self.stdout.write("scheduler stopped")
