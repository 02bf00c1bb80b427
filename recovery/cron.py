"""RQ cron configuration, loaded by `manage.py rqcron recovery.cron` (the RQ scheduler process)."""

from __future__ import annotations

from django.conf import settings
from rq.cron import register

from recovery.jobs import scheduler_tick

register(scheduler_tick, queue_name="default", interval=settings.RECOVERY_SCHEDULER_INTERVAL)
