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
from rq import Queue as RqQueue
from rq import Worker as RqWorker

from console.celery import app as celery_app
from recovery.brokers.registry import broker_session
from recovery.errors import RecoveryError
from recovery.jobs.queue import celery_queue
from recovery.jobs.registry import JobQueue
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


def _probe_rq_queue(name: str) -> Callable[[], str]:
    """One job queue under RQ: what waits on it, what failed, and who listens. Red without a
    worker: its kind of work would wait forever (each queue has workers of its own)."""

    def probe() -> str:
        client = _redis_client()
        try:
            queue = RqQueue(name, connection=client)
            workers = RqWorker.count(queue=queue)
            detail = f"{queue.count} queued, {queue.failed_job_registry.count} failed, {workers} worker(s)"
        finally:
            client.close()
        if not workers:
            raise RecoveryError(f"no RQ worker is listening on {name}; {detail}")
        return detail

    return probe


def _probe_celery_queue(name: str) -> Callable[[], str]:
    """One job queue under Celery: tasks waiting in its Redis list, and the workers consuming it."""

    listed = celery_queue(name)

    def probe() -> str:
        replies = celery_app.control.inspect(timeout=min(1.0, settings.RECOVERY_HEALTH_TIMEOUT)).active_queues() or {}
        workers = [worker for worker, queues in replies.items() if any(q.get("name") == listed for q in queues)]
        client = _redis_client()
        try:
            queued = client.llen(listed)
        finally:
            client.close()
        if not workers:
            raise RecoveryError(f"no Celery worker consumes {listed}; {queued} task(s) queued")
        return f"{queued} task(s) queued, {len(workers)} worker(s)"

    return probe


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
    queue_probe = _probe_celery_queue if settings.RECOVERY_JOB_BACKEND == "celery" else _probe_rq_queue
    probes = [
        ("Core", "Redis", _probe_redis),
        *[("Jobs", f"Queue {name} ({settings.RECOVERY_JOB_BACKEND})", queue_probe(name)) for name in JobQueue.values],
        *[("Brokers", f"{b.name} ({b.get_kind_display()})", _probe_broker(b)) for b in brokers],
    ]
    with ThreadPoolExecutor(max_workers=min(8, len(probes))) as pool:
        remote = list(pool.map(lambda probe: _timed(*probe), probes))
    return [database, remote[0], *local[1:], *remote[1:]]
