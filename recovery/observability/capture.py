"""Telemetry of a capture pass: its span, broker-side DLQ readings and the return of replays.

- The "capture.pass" span covers one pass (all its attempts) with the DLQ and the pass's totals.
- A captured message that carries ``x-replay-id`` is a replayed message that came back to a DLQ:
  the pass's span gets a link to the trace in its ``traceparent`` (the replay run's trace, see
  recovery.observability.replay), one link per run trace; the letter itself keeps the header and
  classification records its replay id, which ties it to its plan item and run.
- DLQ depth is read from the broker at the end of the pass, and the age of the oldest message
  the pass found from the first batch it read (the oldest come first). A broker that cannot say
  leaves the last reading as it was: a capture problem never fails a capture (invariant 1).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from recovery.errors import BrokerError
from recovery.observability import metrics, tracing

log = logging.getLogger(__name__)
MAX_LINKS = 32
REPLAY_ID = "x-replay-id"  # recovery.replay.messages.REPLAY_ID (not imported: that module imports models)


@dataclass
class PassTelemetry:
    span: trace.Span
    returned: int = 0
    linked: set[int] = field(default_factory=set)


_current: contextvars.ContextVar[PassTelemetry | None] = contextvars.ContextVar("recovery_capture", default=None)


@contextlib.contextmanager
def capture_pass(capture_pass: Any) -> Iterator[PassTelemetry]:
    """The "capture.pass" span, current for the pass (the pass's thread does every broker call)."""
    dlq = capture_pass.dlq
    attributes = {
        "recovery.dlq": dlq.name,
        "recovery.dlq.id": dlq.pk,
        "messaging.system": dlq.broker.kind,
        "recovery.capture.pass_id": capture_pass.pk,
        "recovery.capture.trigger": capture_pass.trigger,
    }
    with tracing.span("capture.pass", attributes, kind=SpanKind.CONSUMER) as span:
        telemetry = PassTelemetry(span)
        token = _current.set(telemetry)
        try:
            yield telemetry
        finally:
            _current.reset(token)


def _text(value: Any) -> str:
    if isinstance(value, dict):  # an SQS message attribute
        value = value.get("StringValue")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:64] if value else ""


@metrics.never_raises
def messages_received(messages: list[Any]) -> None:
    """Link the pass to the run trace of every replayed message among ``messages``."""
    telemetry = _current.get()
    if telemetry is None:
        return
    for message in messages:
        replay_id = _text(message.headers.get(REPLAY_ID))
        if not replay_id:
            continue
        telemetry.returned += 1
        context = tracing.parse_traceparent(message.headers.get("traceparent"))
        if context is None or context.trace_id in telemetry.linked or len(telemetry.linked) >= MAX_LINKS:
            continue
        telemetry.linked.add(context.trace_id)
        telemetry.span.add_link(context, {"recovery.replay_id": replay_id, "recovery.link": "replay-returned"})


@metrics.never_raises
def first_batch_read(dlq: Any, prepared: Any) -> None:
    """The oldest message of the pass's first batch (None: the DLQ was empty): its age since it
    failed (the broker's dead-lettering time, else its first failure)."""
    if prepared is None:
        metrics.dlq_oldest_age(dlq=dlq.name, seconds=0)
        return
    from recovery.capture.store import COLUMNS

    names = [name for name, _ in COLUMNS]
    last, first = names.index("last_failed_at"), names.index("first_failed_at")
    times = [row[last] or row[first] for row in prepared.rows if row[last] or row[first]]
    if times:
        metrics.dlq_oldest_age(dlq=dlq.name, seconds=(timezone.now() - min(times)).total_seconds())


def depth_read(adapter: Any, dlq: Any) -> int | None:
    """Read the DLQ's depth from the broker (end of a pass, periodic job) and return it; never
    raises (None: the broker could not say)."""
    try:
        depth = adapter.depth(dlq.as_address())
    except BrokerError as exc:
        log.info("depth of %s not read: %s", dlq.name, exc)
        return None
    except Exception:  # noqa: BLE001 - a reading must never fail the capture that asked for it
        log.warning("depth of %s not read", dlq.name, exc_info=True)
        return None
    metrics.dlq_depth_read(dlq=dlq.name, broker_kind=dlq.broker.kind, depth=depth)
    return int(depth)


def pass_finished(capture_pass: Any, dlq: Any) -> None:
    """Inside the pass's closing transaction: its totals on the span, counted on commit. Re-dead-
    letters are the letters this pass stored (a known letter keeps its first pass) that carry an
    x-replay-id."""
    from recovery.models import DeadLetter

    returned = 0
    if capture_pass.captured:
        returned = DeadLetter.objects.filter(capture_pass_id=capture_pass.pk, headers__has_key=REPLAY_ID).count()
    failed = bool(capture_pass.error)
    trace.get_current_span().set_attributes(
        {
            "recovery.capture.received": capture_pass.received,
            "recovery.capture.captured": capture_pass.captured,
            "recovery.capture.duplicates": capture_pass.duplicates,
            "recovery.capture.removed": capture_pass.removed,
            "recovery.capture.redeadlettered": returned,
            "recovery.capture.attempts": capture_pass.attempts,
            "recovery.capture.remaining": capture_pass.remaining if capture_pass.remaining is not None else -1,
            "recovery.capture.failed": failed,
        }
    )
    name = dlq.name
    captured = capture_pass.captured
    if returned:
        telemetry = _current.get()
        traces = sorted(format(t, "032x") for t in telemetry.linked) if telemetry else []
        log.info("%d replayed message(s) came back to %s", returned, name, extra={"replay_traces": ",".join(traces)})
    metrics.on_commit(
        lambda: metrics.capture_pass_counted(dlq=name, captured=captured, redeadlettered=returned, failed=failed)
    )
