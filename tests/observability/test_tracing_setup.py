"""Tracing is off unless the standard OTEL_* variables ask for it, and then exports our spans
from every process that loads the settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from recovery.observability import tracing

ROOT = Path(__file__).resolve().parents[2]
OTEL = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")  # fmt: skip


@pytest.fixture
def env(monkeypatch):
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_it_is_off_by_default(env) -> None:
    assert tracing.exporter_names() == []


def test_an_otlp_endpoint_turns_on_the_otlp_exporter(env) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.exporter_names() == ["otlp"]


def test_the_exporter_list_is_read_and_none_means_off(env) -> None:
    env.setenv("OTEL_TRACES_EXPORTER", "console, otlp")
    assert tracing.exporter_names() == ["console", "otlp"]
    env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_names() == []


def test_sdk_disabled_wins(env) -> None:
    env.setenv("OTEL_TRACES_EXPORTER", "console")
    env.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.exporter_names() == []


def test_an_unknown_exporter_stops_the_start() -> None:
    with pytest.raises(ImproperlyConfigured, match="installed exporters"):
        tracing._load_exporter("no-such-exporter")  # noqa: SLF001


def test_every_named_exporter_and_instrumentation_is_installed() -> None:
    for name in ("otlp", "console"):
        assert tracing._load_exporter(name) is not None  # noqa: SLF001
    from django.utils.module_loading import import_string

    for path in tracing.INSTRUMENTATIONS.values():
        assert import_string(path)().instrumentation_dependencies()


def test_instrumentations_follow_the_environment(env) -> None:
    assert "confluent_kafka" not in tracing.instrumentation_names()
    env.setenv("RECOVERY_OTEL_INSTRUMENTATIONS", "django,confluent_kafka")
    env.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "django")
    assert tracing.instrumentation_names() == ["confluent_kafka"]
    env.setenv("RECOVERY_OTEL_INSTRUMENTATIONS", "kafka-python")
    with pytest.raises(ImproperlyConfigured):
        tracing.instrumentation_names()


def test_client_spans_without_a_parent_are_not_recorded() -> None:
    sampler = tracing.QuietRootSampler(ALWAYS_ON)
    assert sampler.should_sample(None, 1, "GET", SpanKind.CLIENT).decision == Decision.DROP
    assert sampler.should_sample(None, 1, "job", SpanKind.CONSUMER).decision == Decision.RECORD_AND_SAMPLE
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1))))
    assert sampler.should_sample(parent, 1, "GET", SpanKind.CLIENT).decision == Decision.RECORD_AND_SAMPLE


def test_traceparent_round_trip() -> None:
    context = tracing.parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert tracing.format_traceparent(context) == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.parse_traceparent({"StringValue": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert tracing.parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") is not None
    for bad in ("", None, "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01", 42):
        assert tracing.parse_traceparent(bad) is None


def test_a_process_started_with_the_console_exporter_exports_our_spans() -> None:
    script = (
        "import django; django.setup()\n"
        "from recovery.observability import tracing\n"
        "assert tracing.enabled()\n"
        "with tracing.span('probe.span', {'recovery.probe': 1}): pass\n"
        "tracing.flush()\n"
    )
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "dlq-console-test",
           "DJANGO_SETTINGS_MODULE": "console.settings"}  # fmt: skip
    env.pop("OTEL_SDK_DISABLED", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert '"name": "probe.span"' in result.stdout.decode()
    assert "dlq-console-test" in result.stdout.decode()
