"""Reads for the health page: does each dependency answer, how fast, and if not, why.

Every probe has its own timeout (RECOVERY_HEALTH_TIMEOUT) and the probes run side by side, so a
dead service makes its own row red without slowing the page much or breaking it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from recovery.brokers.registry import broker_session
from recovery.errors import RecoveryError
from recovery.models import Broker, WorkerHeartbeat


@dataclass(frozen=True)
class HealthCheck:
    group: str
    name: str
    ok: bool
    latency_ms: float | None
    detail: str = ""
    error: str = ""


# A probe returns its detail text, or (detail, measured round trip in ms) when it can time the
# round trip alone, without client set-up such as a first import.
ProbeResult = str | tuple[str, float]


def _timed(group: str, name: str, probe: Callable[[], ProbeResult]) -> HealthCheck:
    start = time.perf_counter()
    try:
        result = probe()
    except Exception as exc:  # a probe's failure is the row's content, never the page's
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, RecoveryError):
            message = f"{type(exc).__name__}: {message}"
        return HealthCheck(group, name, False, None, error=message[:500])
    if isinstance(result, tuple):
        detail, latency_ms = result
    else:
        detail, latency_ms = result, (time.perf_counter() - start) * 1000
    return HealthCheck(group, name, True, latency_ms, detail=detail)


def _redis_client() -> redis.Redis:
    timeout = settings.RECOVERY_HEALTH_TIMEOUT
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


def _probe_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("select version()")
        (version,) = cursor.fetchone()
    return version.split(" on ")[0]


def _probe_redis() -> ProbeResult:
    client = _redis_client()
    try:
        start = time.perf_counter()
        client.ping()
        latency_ms = (time.perf_counter() - start) * 1000
        info = client.info("server")
    finally:
        client.close()
    return f"Redis {info.get('redis_version', '?')}", latency_ms


def _probe_rq_queues() -> str:
    from rq import Queue, Worker

    client = _redis_client()
    try:
        parts = []
        workers = 0
        for name in settings.RECOVERY_JOB_QUEUES:
            queue = Queue(name, connection=client)
            count = Worker.count(queue=queue)
            workers += count
            parts.append(f"{name}: {queue.count} queued, {queue.failed_job_registry.count} failed, {count} worker(s)")
    finally:
        client.close()
    if not workers:
        raise RecoveryError("no RQ worker is listening; " + "; ".join(parts))
    return "; ".join(parts)


def _probe_celery_queues() -> str:
    from console.celery import app

    replies = app.control.inspect(timeout=min(1.0, settings.RECOVERY_HEALTH_TIMEOUT)).ping() or {}
    client = _redis_client()
    try:
        queued = client.llen(settings.CELERY_TASK_DEFAULT_QUEUE)
    finally:
        client.close()
    if not replies:
        raise RecoveryError(f"no Celery worker answered a ping; {queued} task(s) queued")
    return f"{len(replies)} worker(s); {queued} task(s) queued"


def _probe_heartbeat() -> str:
    try:
        beat = WorkerHeartbeat.objects.filter(backend=settings.RECOVERY_JOB_BACKEND).latest("beat_at")
    except WorkerHeartbeat.DoesNotExist:
        raise RecoveryError("no worker has run a scheduled job yet (is the scheduler running?)") from None
    age = timezone.now() - beat.beat_at
    if age > timedelta(seconds=3 * settings.RECOVERY_SCHEDULER_INTERVAL):
        raise RecoveryError(f"last scheduled job ran {int(age.total_seconds())} s ago on {beat.worker}")
    return f"last scheduled job ran {int(age.total_seconds())} s ago on {beat.worker}"


def _probe_broker(broker: Broker) -> Callable[[], ProbeResult]:
    def probe() -> ProbeResult:
        with broker_session(broker, timeout=settings.RECOVERY_HEALTH_TIMEOUT) as adapter:
            ping = adapter.ping()
        return ping.detail, ping.latency_ms

    return probe


def health_report() -> list[HealthCheck]:
    """One HealthCheck per dependency: database, Redis, job queues, worker heartbeat, each broker.

    Database reads run here; the network probes run side by side in threads (which hold no
    database connection)."""
    database = _timed("Core", "PostgreSQL", _probe_database)
    local = [database]
    brokers: list[Broker] = []
    if database.ok:
        local.append(_timed("Jobs", "Scheduler and worker heartbeat", _probe_heartbeat))
        brokers = list(Broker.objects.filter(enabled=True))
    queue_probe = _probe_celery_queues if settings.RECOVERY_JOB_BACKEND == "celery" else _probe_rq_queues
    probes = [
        ("Core", "Redis", _probe_redis),
        ("Jobs", f"Job queues ({settings.RECOVERY_JOB_BACKEND})", queue_probe),
        *[("Brokers", f"{b.name} ({b.get_kind_display()})", _probe_broker(b)) for b in brokers],
    ]
    with ThreadPoolExecutor(max_workers=min(8, len(probes))) as pool:
        remote = list(pool.map(lambda probe: _timed(*probe), probes))
    return [database, remote[0], *local[1:], *remote[1:]]
