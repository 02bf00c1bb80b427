"""The periodic reading of broker-side DLQ depth for the DLQs no scheduled capture pass reads.

A DLQ captured on a schedule has its depth read at the end of every pass
(recovery.observability.capture). One captured only by hand, or disabled, would otherwise never
be read: the scheduler asks for this reading every RECOVERY_METRICS_DEPTH_INTERVAL seconds
(claimed in Redis, so several schedulers read once). Brokers are read here, never during a
scrape: a slow broker must not make /metrics slow.
"""

from __future__ import annotations

import logging
from itertools import groupby

import redis
from django.conf import settings

from recovery.brokers.registry import broker_session
from recovery.models import DeadLetterQueue
from recovery.observability import capture

log = logging.getLogger(__name__)
DUE_KEY = "recovery:metrics:depths"


def dlq_depth_reading_due() -> bool:
    """True once per interval across every scheduler (SET NX with the interval as expiry)."""
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        with client:
            return bool(client.set(DUE_KEY, "1", nx=True, ex=settings.RECOVERY_METRICS_DEPTH_INTERVAL))
    except redis.RedisError:
        return False


def dlq_depths_record() -> int:
    """Read and export the depth of every DLQ of an enabled broker without a scheduled capture;
    returns how many were read. One broker's failure does not stop the others."""
    unscheduled = DeadLetterQueue.objects.filter(broker__enabled=True).exclude(enabled=True, capture_interval__gt=0)
    read = 0
    for _broker_id, group in groupby(
        unscheduled.select_related("broker").order_by("broker_id", "pk"), key=lambda d: d.broker_id
    ):
        dlqs = list(group)
        try:
            with broker_session(dlqs[0].broker, timeout=settings.RECOVERY_HEALTH_TIMEOUT) as adapter:
                for dlq in dlqs:
                    capture.depth_read(adapter, dlq)  # never raises
                    read += 1
        except Exception:  # noqa: BLE001 - an unreachable broker is a missing reading, not a failed job
            log.info("depths on %s not read: broker unreachable", dlqs[0].broker.name, exc_info=True)
    return read
