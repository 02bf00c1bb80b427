"""One scrape of /metrics: every process's metrics plus what is read at scrape time.

- Multiprocess files (PROMETHEUS_MULTIPROC_DIR) are compacted, then read under the shared lock
  (recovery.observability.multiproc); without the folder, this process's registry is read.
- Read at scrape time, cheaply and with short timeouts: replay runs by state and the progress of
  active runs (PostgreSQL, indexed), job queue lengths (Redis). A source that fails is reported
  by ``recovery_metrics_source_up`` = 0 and leaves the rest of the scrape intact.
- Never a broker: DLQ depths are exported by whoever last read them (capture passes, the
  periodic depth job), so a slow broker cannot make a scrape slow.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from recovery.observability import metrics, multiproc

log = logging.getLogger(__name__)


class _LockedFiles(MultiProcessCollector):
    """The processes' files, read while no compaction moves values between them; a file still
    being created by a starting process is skipped (it holds no value yet)."""

    def collect(self) -> list[Metric]:  # type: ignore[override]
        with multiproc.locked(self._path, exclusive=False):
            files = multiproc.readable(glob.glob(os.path.join(self._path, "*.db")))
            return list(self.merge(files, accumulate=True))


class _ThisProcess:
    def collect(self) -> Iterator[Metric]:
        yield from metrics.REGISTRY.collect()


def _runs() -> list[Metric]:
    from recovery.models import RUN_ACTIVE, ReplayRun, RunState

    by_state = GaugeMetricFamily("recovery_replay_runs", "Replay runs by state.", labels=["state"])
    counts = dict(ReplayRun.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    for state in RunState:
        by_state.add_metric([state.value], counts.get(state.value, 0))
    info = GaugeMetricFamily(
        "recovery_replay_run_info",
        "Active runs (1 each) with their state and phase.",
        labels=["run_id", "plan_id", "state", "phase"],
    )
    stopped = GaugeMetricFamily(
        "recovery_replay_run_stopped_by_condition",
        "1 while an active run is paused by a stop condition (its reason is on the run).",
        labels=["run_id"],
    )
    published = CounterMetricFamily(
        "recovery_replay_run_published", "Letters an active run has published.", labels=["run_id"]
    )
    failed = CounterMetricFamily(
        "recovery_replay_run_failed", "Letters an active run failed to publish.", labels=["run_id"]
    )
    total = GaugeMetricFamily("recovery_replay_run_letters", "Letters in an active run.", labels=["run_id"])
    rate = GaugeMetricFamily(
        "recovery_replay_run_rate_limit", "An active run's planned rate (messages/s).", labels=["run_id"]
    )
    active = ReplayRun.objects.filter(state__in=RUN_ACTIVE).select_related("plan").order_by("pk")[:200]
    for run in active:
        run_id = str(run.pk)
        info.add_metric([run_id, str(run.plan_id), run.state, run.phase or ""], 1)
        stopped.add_metric([run_id], 1 if run.state == RunState.PAUSED and run.stop_reason else 0)
        published.add_metric([run_id], run.published)
        failed.add_metric([run_id], run.failed)
        total.add_metric([run_id], run.total)
        rate.add_metric([run_id], run.plan.rate_per_second)
    return [by_state, info, stopped, published, failed, total, rate]


def _queues() -> list[Metric]:
    from rq import Queue

    lengths = GaugeMetricFamily("recovery_job_queue_length", "Jobs waiting in each job queue.", labels=["queue"])
    failed = GaugeMetricFamily("recovery_job_failed", "Failed jobs kept by RQ, per queue.", labels=["queue"])
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    with client:
        for name in settings.RECOVERY_JOB_QUEUES:
            if settings.RECOVERY_JOB_BACKEND == "celery":
                queue = settings.CELERY_TASK_DEFAULT_QUEUE if name == "default" else f"recovery-{name}"
                lengths.add_metric([name], client.llen(queue))
            else:
                queue = Queue(name, connection=client)
                lengths.add_metric([name], queue.count)
                failed.add_metric([name], queue.failed_job_registry.count)
    return [lengths] + ([failed] if failed.samples else [])


class _ReadAtScrape:
    SOURCES = (("database", _runs, DatabaseError), ("redis", _queues, redis.RedisError))

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "recovery_metrics_source_up", "1 when the scrape could read the source.", labels=["source"]
        )
        for name, read, errors in self.SOURCES:
            try:
                found: list[Any] = read()
            except errors as exc:
                log.warning("metrics: %s not read: %s", name, exc)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from found
        yield up


def render() -> tuple[bytes, str]:
    """The scrape's body and content type."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiproc.directory()
    if path and os.path.isdir(path):
        multiproc.compact_now_and_then(every=0)
        registry.register(_LockedFiles(None, path=path))
    else:
        registry.register(_ThisProcess())  # type: ignore[arg-type]
    registry.register(_ReadAtScrape())  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
