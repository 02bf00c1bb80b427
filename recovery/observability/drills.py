"""Hooks for the drill runner (recovery.drills, issue 7): a span per drill run and per step, and
the drill's result in the metrics (recovery_drill_results_total, recovery_drill_duration_seconds,
recovery_drill_last_success_timestamp_seconds). The runner calls::

    with drill_run(name=drill.name, drill_id=drill.pk):
        with drill_step("inject"):
            ...
        drill_finished(name=drill.name, ok=recovered, seconds=time_to_recover)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from recovery.observability import metrics, tracing


@contextlib.contextmanager
def drill_run(*, name: str, drill_id: Any = None, **attributes: Any) -> Iterator[trace.Span]:
    """The "drill.run" span; the steps inside are its children."""
    extra = {f"recovery.drill.{key}": value for key, value in attributes.items()}
    with tracing.span("drill.run", {"recovery.drill.name": name, "recovery.drill.id": drill_id, **extra}) as span:
        yield span


@contextlib.contextmanager
def drill_step(step: str, **attributes: Any) -> Iterator[trace.Span]:
    """A "drill.step" span (inject, capture, classify, replay, verify, ...)."""
    extra = {f"recovery.drill.{key}": value for key, value in attributes.items()}
    with tracing.span("drill.step", {"recovery.drill.step": step, **extra}) as span:
        yield span


def drill_finished(*, name: str, ok: bool, seconds: float) -> None:
    """Record a drill's result; also marks the current span (the drill run) with it. ``ok``: the
    run's outcome is passed (label ``outcome="succeeded"``); a failed or skipped run is
    ``outcome="failed"`` (the run's job state does not matter: a drill that found recovery broken
    and one whose job was lost both failed)."""
    metrics.drill_result(drill=name, ok=ok, seconds=seconds)
    trace.get_current_span().set_attributes({"recovery.drill.ok": ok, "recovery.drill.seconds": seconds})
