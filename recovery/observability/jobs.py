"""What every background job gets, under RQ and Celery alike: a "job.<name>" span, its name, id
and run id in the log context, its outcome and duration in the metrics, and its spans exported
before it returns (an RQ work horse leaves with os._exit, which runs no exit hook). A worker also
folds the metric files of dead work horses now and then (recovery.observability.multiproc).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind

from recovery.observability import logging as log_context
from recovery.observability import metrics, multiproc, tracing

F = TypeVar("F", bound=Callable[..., Any])


def _rq_job_id() -> str:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # noqa: BLE001 - outside an RQ worker
        return ""
    return job.id if job is not None else ""


def _job_id() -> str:
    if rq_job := _rq_job_id():
        return rq_job
    from celery import current_task

    return str(current_task.request.id or "") if current_task else ""


def observed_job(func: F) -> F:
    """Decorate a job function of recovery.jobs (name and module are kept: jobs go by path)."""
    name = func.__name__
    parameters = list(inspect.signature(func).parameters)
    run_index = parameters.index("run_id") if "run_id" in parameters else None

    @functools.wraps(func)
    def job(*args: Any, **kwargs: Any) -> Any:
        multiproc.compact_now_and_then()
        run_id = kwargs.get("run_id", args[run_index] if run_index is not None and len(args) > run_index else None)
        job_id = _job_id()
        started, ok = time.monotonic(), False
        attributes = {
            "recovery.job.name": name,
            "recovery.job.id": job_id or None,
            "recovery.run.id": run_id,
            "recovery.job.args": [str(a) for a in args],
        }
        try:
            with (
                log_context.bound(job=name, job_id=job_id, run_id=run_id),
                tracing.span(f"job.{name}", attributes, kind=SpanKind.CONSUMER),
            ):
                result = func(*args, **kwargs)
            ok = True
            return result
        finally:
            metrics.job_finished(job=name, ok=ok, seconds=time.monotonic() - started)  # never raises
            if _rq_job_id():  # an RQ work horse exits without exit hooks; Celery's workers live on
                tracing.flush(timeout_millis=3000)  # the SDK logs export errors, never raises

    return job  # type: ignore[return-value]
