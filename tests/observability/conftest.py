"""Spans recorded in memory for the length of one test (the tracer provider is installed once per
process, as in production; a switch keeps it from recording outside these tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from recovery.observability import tracing


class _Switched(SimpleSpanProcessor):
    recording = False

    def on_end(self, span: ReadableSpan) -> None:
        if _Switched.recording:
            super().on_end(span)


_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def _tracer_provider() -> None:
    already_on = tracing.enabled()  # OTEL_* variables turned it on at start-up
    provider = tracing.configure([_EXPORTER], processor=_Switched)
    if already_on:
        provider.add_span_processor(_Switched(_EXPORTER))


@pytest.fixture
def spans(_tracer_provider: None) -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test."""
    _EXPORTER.clear()
    _Switched.recording = True
    yield _EXPORTER
    _Switched.recording = False
    _EXPORTER.clear()
