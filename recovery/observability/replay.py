"""Telemetry of a replay run: one trace per run, shared by every batch of every worker.

A run's trace id is ``ReplayRun.trace_id`` (the trace of the request that started it). Its root
span, "replay.run", has a span id derived from the run (``run_span_context``), so any worker in
any process can parent its "replay.batch" spans to it without storing anything. The root span is
recorded once, when the run starts, as a child of the starting request's span.

Every replayed message's ``traceparent`` (invariant 3) is taken from the batch span that published
it: a consumer's span for the message, and the capture of the message if it comes back to a DLQ
(recovery.observability.capture), land in the run's trace. With tracing off the spans are no-ops
and the traceparent names the run's root span; the trace id is the run's either way.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from recovery.observability import metrics, tracing

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def run_span_context(run: Any) -> SpanContext | None:
    """The run's root span as a remote parent (None when the run has no valid trace id)."""
    trace_hex = (run.trace_id or "").lower()
    if not _TRACE_ID.match(trace_hex) or set(trace_hex) == {"0"}:
        return None
    span_id = int(hashlib.sha256(f"recovery-run:{run.pk}:{trace_hex}".encode()).hexdigest()[:16], 16) or 1
    return SpanContext(int(trace_hex, 16), span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _run_attributes(run: Any) -> dict[str, Any]:
    dlqs = (getattr(run.plan, "selection", None) or {}).get("dlq")
    return {
        "recovery.run.id": run.pk,
        "recovery.plan.id": run.plan_id,
        "recovery.dlq.ids": [int(d) for d in dlqs if str(d).isdigit()] if isinstance(dlqs, list) else None,
    }


def replay_run_started(run: Any) -> None:
    """Record the run's root span (call on commit of the run's creation). A child of the current
    span when it is in the run's trace (the request that started it), else a root span."""
    root = run_span_context(run)
    if root is None:
        return
    current = trace.get_current_span().get_span_context()
    parent = None if current.is_valid and current.trace_id == root.trace_id else otel_context.Context()
    attributes = {**_run_attributes(run), "recovery.run.total": run.total}
    with tracing.forced_ids(root.trace_id, root.span_id), tracing.span("replay.run", attributes, context=parent):
        pass


@dataclass
class BatchTelemetry:
    """What one batch did, gathered while it publishes and set on its span at the end."""

    span: trace.Span
    counts: dict[str, int] = field(default_factory=lambda: {"published": 0, "unconfirmed": 0, "unsent": 0})
    brokers: set[str] = field(default_factory=set)


_current_batch: contextvars.ContextVar[BatchTelemetry | None] = contextvars.ContextVar("recovery_batch", default=None)


@contextlib.contextmanager
def replay_batch(run: Any, size: int) -> Iterator[BatchTelemetry]:
    """The "replay.batch" span of one claimed batch, child of the run's root span and linked to
    the span it runs in (the worker's job). Outcome counts are added by ``replay_outcomes``."""
    root = run_span_context(run)
    parent = trace.set_span_in_context(NonRecordingSpan(root)) if root else None
    here = trace.get_current_span().get_span_context()
    links = [Link(here)] if here.is_valid and (root is None or here.trace_id != root.trace_id) else []
    attributes = {**_run_attributes(run), "recovery.batch.size": size, "recovery.run.phase": run.phase}
    started = time.monotonic()
    with tracing.span("replay.batch", attributes, context=parent, kind=SpanKind.PRODUCER, links=links) as span:
        batch = BatchTelemetry(span)
        token = _current_batch.set(batch)
        try:
            yield batch
        finally:
            _current_batch.reset(token)
            span.set_attributes({f"recovery.batch.{name}": number for name, number in batch.counts.items()})
            for broker in batch.brokers:
                metrics.replay_batch_seconds(broker=broker, seconds=time.monotonic() - started)


def message_traceparent(run: Any) -> str:
    """The traceparent for a message published now for ``run``: the current (batch) span when it
    is in the run's trace, else the run's root span."""
    current = trace.get_current_span().get_span_context()
    root = run_span_context(run)
    if current.is_valid and (root is None or current.trace_id == root.trace_id):
        return tracing.format_traceparent(current)
    if root is None:  # a run without a trace id: a fresh trace per message, as before
        return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    return tracing.format_traceparent(root)


def replay_outcomes(*, broker: str, published: int = 0, unconfirmed: int = 0, unsent: int = 0) -> None:
    """What the target said about (part of) the current batch: counted, and added to its span."""
    metrics.replay_outcomes(broker=broker, published=published, unconfirmed=unconfirmed, unsent=unsent)
    batch = _current_batch.get()
    if batch is not None:
        batch.brokers.add(broker)
        for name, number in {"published": published, "unconfirmed": unconfirmed, "unsent": unsent}.items():
            batch.counts[name] += number


def stop_conditions_tripped(run: Any, *, conditions: list[str], action: str, reason: str) -> None:
    """A run was paused or stopped by checks (count once, by the caller that moved the run)."""
    metrics.stop_condition_tripped(conditions=conditions, action=action)
    root = run_span_context(run)
    parent = trace.set_span_in_context(NonRecordingSpan(root)) if root else None
    attributes = {
        **_run_attributes(run),
        "recovery.stop.action": action,
        "recovery.stop.conditions": conditions,
        "recovery.stop.reason": reason[:500],
    }
    with tracing.span("replay.stop_condition", attributes, context=parent):
        pass
