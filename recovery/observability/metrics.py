"""The console's Prometheus metrics: definitions and the small functions code calls to move them.

Counters of stored things count what was committed: helpers that run inside a transaction add on
commit, so a rolled-back batch is never counted (the numbers agree with the database). Replay
publishes count what the target broker said, when it said it. Broker-side gauges
(DLQ depth, oldest message age) are written by the capture pass and the periodic depth job that
read them, never by a scrape: a scrape must not wait on a broker. Gauges use the 'mostrecent'
multiprocess mode: the last reading wins, whichever process made it, and survives that process.

Label values are bounded: DLQ and broker names (configuration), job names, states and outcomes
(choices); never a run, letter or message id.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from recovery.observability import multiproc  # noqa: F401 - names the files before any metric is made

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# Definitions live here; a scrape collects from this registry (one process) or from the files of
# every process (multiprocess mode, recovery.observability.scrape).
REGISTRY = CollectorRegistry(auto_describe=True)

CAPTURED = Counter(
    "recovery_letters_captured", "Dead letters newly stored by capture passes.", ["dlq"], registry=REGISTRY
)
REDEADLETTERED = Counter(
    "recovery_letters_redeadlettered",
    "Captured letters that carry an x-replay-id: replayed messages that came back to a DLQ.",
    ["dlq"],
    registry=REGISTRY,
)
DISCARDED = Counter("recovery_letters_discarded", "Dead letters discarded by triage.", registry=REGISTRY)
CAPTURE_PASSES = Counter(
    "recovery_capture_passes", "Capture passes ended, by outcome.", ["dlq", "outcome"], registry=REGISTRY
)
CAPTURE_ERRORS = Counter(
    "recovery_capture_errors",
    "Failed capture attempts: transient (retried), permanent, parking (oversize body not parked) or internal.",
    ["dlq", "kind"],
    registry=REGISTRY,
)
DLQ_DEPTH = Gauge(
    "recovery_dlq_depth",
    "Messages waiting on the broker in the DLQ (Kafka: the console group's lag), at the last reading.",
    ["dlq", "broker_kind"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
DLQ_OLDEST_AGE = Gauge(
    "recovery_dlq_oldest_age_seconds",
    "Age of the oldest message the last capture pass found on the broker (0: the DLQ was empty).",
    ["dlq"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
DLQ_READ_AT = Gauge(
    "recovery_dlq_depth_read_timestamp_seconds",
    "When the DLQ's depth was last read from the broker (Unix time).",
    ["dlq"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
REPLAYED = Counter(
    "recovery_replay_messages",
    "Replay publishes by outcome: published (the target broker confirmed it), unconfirmed (the broker "
    "did not confirm it: retried, or failed after the last attempt), unsent (the target was unreachable).",
    ["broker", "outcome"],
    registry=REGISTRY,
)
REPLAY_BATCH_SECONDS = Histogram(
    "recovery_replay_batch_seconds",
    "Time to publish one replay batch and record its outcomes.",
    ["broker"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
STOP_CONDITION_TRIPS = Counter(
    "recovery_stop_condition_trips",
    "Runs paused or stopped by a stop condition or a run-time precondition, by check and action.",
    ["condition", "action"],
    registry=REGISTRY,
)
DRILL_RESULTS = Counter("recovery_drill_results", "Drills ended, by outcome.", ["drill", "outcome"], registry=REGISTRY)
DRILL_SECONDS = Histogram(
    "recovery_drill_duration_seconds",
    "Drill duration (time to recover) of drills that ended.",
    ["drill"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
DRILL_LAST_SUCCESS = Gauge(
    "recovery_drill_last_success_timestamp_seconds",
    "When the drill last succeeded (Unix time).",
    ["drill"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)
JOBS = Counter("recovery_jobs", "Background jobs run, by job and outcome.", ["job", "outcome"], registry=REGISTRY)
JOB_SECONDS = Histogram(
    "recovery_job_duration_seconds",
    "Background job duration.",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900),
    registry=REGISTRY,
)


def never_raises(update: F) -> F:
    """Telemetry never changes an outcome: a metric that cannot be written (a full disk, a
    damaged file) is logged and skipped, never raised into a capture, a replay or a job."""

    @functools.wraps(update)
    def quiet(*args: Any, **kwargs: Any) -> None:
        try:
            update(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.warning("metric %s not updated", update.__name__, exc_info=True)

    return quiet  # type: ignore[return-value]


def on_commit(update: Callable[[], None]) -> None:
    """Run ``update`` once the current transaction commits (at once outside one)."""
    transaction.on_commit(never_raises(update))


@never_raises
def capture_pass_counted(*, dlq: str, captured: int, redeadlettered: int, failed: bool) -> None:
    CAPTURED.labels(dlq).inc(captured)
    REDEADLETTERED.labels(dlq).inc(redeadlettered)
    CAPTURE_PASSES.labels(dlq, "failed" if failed else "succeeded").inc()


@never_raises
def capture_error(*, dlq: str, kind: str) -> None:
    CAPTURE_ERRORS.labels(dlq, kind).inc()


@never_raises
def dlq_depth_read(*, dlq: str, broker_kind: str, depth: int) -> None:
    DLQ_DEPTH.labels(dlq, broker_kind).set(depth)
    DLQ_READ_AT.labels(dlq).set(time.time())


@never_raises
def dlq_oldest_age(*, dlq: str, seconds: float) -> None:
    DLQ_OLDEST_AGE.labels(dlq).set(max(seconds, 0.0))


@never_raises
def replay_batch_seconds(*, broker: str, seconds: float) -> None:
    REPLAY_BATCH_SECONDS.labels(broker).observe(seconds)


@never_raises
def letters_discarded(count: int) -> None:
    """Triage discarded ``count`` letters (counted when the transaction commits)."""
    if count:
        on_commit(lambda: DISCARDED.inc(count))


@never_raises
def replay_outcomes(*, broker: str, published: int, unconfirmed: int, unsent: int) -> None:
    """What the target broker said about a batch's messages (invariant 2: published only when it
    confirmed). The broker has them whatever the ledger records next: counted at once. A letter
    published again after its worker lost the lease counts again: the target got it twice."""
    for outcome, number in (("published", published), ("unconfirmed", unconfirmed), ("unsent", unsent)):
        if number:
            REPLAYED.labels(broker, outcome).inc(number)


@never_raises
def stop_condition_tripped(*, conditions: list[str], action: str) -> None:
    for condition in conditions or ["unknown"]:
        STOP_CONDITION_TRIPS.labels(condition, action).inc()


@never_raises
def drill_result(*, drill: str, ok: bool, seconds: float) -> None:
    """A drill ended (the hook for recovery.drills): outcome, duration, last success."""
    DRILL_RESULTS.labels(drill, "succeeded" if ok else "failed").inc()
    DRILL_SECONDS.labels(drill).observe(seconds)
    if ok:
        DRILL_LAST_SUCCESS.labels(drill).set(time.time())


@never_raises
def job_finished(*, job: str, ok: bool, seconds: float) -> None:
    JOBS.labels(job, "succeeded" if ok else "failed").inc()
    JOB_SECONDS.labels(job).observe(seconds)
