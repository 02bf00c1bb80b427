"""OpenTelemetry tracing: set up from the standard OTEL_* variables, off unless they ask for it.

- Off by default: with OTEL_SDK_DISABLED=true, or with neither OTEL_TRACES_EXPORTER nor an
  OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT set, nothing is installed and every span below is the
  API's no-op (no thread, no export, no library patched).
- OTEL_TRACES_EXPORTER names exporters by their standard names: ``otlp`` (HTTP/protobuf, the
  transport installed; configured by OTEL_EXPORTER_OTLP_*), ``console`` (for `make run`), ``none``. The
  sampler (OTEL_TRACES_SAMPLER) and resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) come
  from the SDK's own reading of the environment.
- Quiet roots: a client library's span without a parent (an idle worker polling Redis, a query
  outside any request or job) is not recorded; requests, jobs and our own spans are.
- Library instrumentations (Django, psycopg, Redis, botocore, pika; confluent-kafka on request:
  see docs/operations.md) are installed when tracing is on, minus OTEL_PYTHON_DISABLED_INSTRUMENTATIONS.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

log = logging.getLogger(__name__)

INSTRUMENTATIONS = {
    "django": "opentelemetry.instrumentation.django.DjangoInstrumentor",
    "psycopg": "opentelemetry.instrumentation.psycopg.PsycopgInstrumentor",
    "redis": "opentelemetry.instrumentation.redis.RedisInstrumentor",
    "botocore": "opentelemetry.instrumentation.botocore.BotocoreInstrumentor",
    "pika": "opentelemetry.instrumentation.pika.PikaInstrumentor",
    "confluent_kafka": "opentelemetry.instrumentation.confluent_kafka.ConfluentKafkaInstrumentor",
}
DEFAULT_INSTRUMENTATIONS = ("django", "psycopg", "redis", "botocore", "pika")
DJANGO_EXCLUDED_URLS = "metrics,static/"  # scrapes and static files make no traces
_OTLP_PROTOCOLS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc", "http/json": "otlp_json_http"}
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_provider: TracerProvider | None = None
_forced_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("recovery_ids", default=None)


class _Ids(RandomIdGenerator):
    """Random ids, except for a span started inside ``forced_ids`` (a run's root span, whose ids
    every worker derives from the run without asking anyone)."""

    def generate_span_id(self) -> int:
        forced = _forced_ids.get()
        return forced[1] if forced else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _forced_ids.get()
        return forced[0] if forced else super().generate_trace_id()


class QuietRootSampler(Sampler):
    """Drops parentless CLIENT spans, then defers to the sampler the environment chose."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind == SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"QuietRoots{{{self.delegate.get_description()}}}"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def exporter_names() -> list[str]:
    """The exporters the environment asks for; [] means tracing stays off."""
    if _truthy("OTEL_SDK_DISABLED"):
        return []
    raw = os.environ.get("OTEL_TRACES_EXPORTER")
    if raw is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [name for name in (n.strip().lower() for n in raw.split(",")) if name and name != "none"]


def _load_exporter(name: str) -> SpanExporter:
    if name == "otlp":  # the transport OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names; HTTP is what ships
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        name = _OTLP_PROTOCOLS.get((protocol or "http/protobuf").strip().lower(), f"otlp ({protocol})")
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        known = sorted(e.name for e in entry_points(group="opentelemetry_traces_exporter"))
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER names {name!r}; installed exporters: {', '.join(known)}")
    return next(iter(found)).load()()


def configure(
    exporters: list[SpanExporter] | None = None, *, processor: type = BatchSpanProcessor
) -> TracerProvider | None:
    """Install the SDK's tracer provider once per process with ``exporters`` (default: those the
    environment names). Returns it, or None when tracing is off. Tests pass an in-memory exporter."""
    global _provider
    if _provider is not None:
        return _provider
    if exporters is None:
        exporters = [_load_exporter(name) for name in exporter_names()]
    if not exporters:
        return None
    env_sampler = TracerProvider(shutdown_on_exit=False).sampler  # OTEL_TRACES_SAMPLER(_ARG), read by the SDK
    provider = TracerProvider(sampler=QuietRootSampler(env_sampler), id_generator=_Ids())
    for exporter in exporters:
        provider.add_span_processor(processor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def instrumentation_names() -> list[str]:
    """RECOVERY_OTEL_INSTRUMENTATIONS (default: all but confluent_kafka) minus
    OTEL_PYTHON_DISABLED_INSTRUMENTATIONS."""
    raw = os.environ.get("RECOVERY_OTEL_INSTRUMENTATIONS")
    wanted = [n.strip() for n in raw.split(",") if n.strip()] if raw is not None else list(DEFAULT_INSTRUMENTATIONS)
    unknown = sorted(set(wanted) - set(INSTRUMENTATIONS))
    if unknown:
        raise ImproperlyConfigured(f"RECOVERY_OTEL_INSTRUMENTATIONS: unknown {', '.join(unknown)}")
    disabled = {n.strip() for n in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    return [name for name in wanted if name not in disabled]


def instrument_libraries(names: list[str] | None = None) -> list[str]:
    """Install the library instrumentations (idempotent: an instrumentor installs once)."""
    from django.utils.module_loading import import_string

    done = []
    for name in instrumentation_names() if names is None else names:
        instrumentor = import_string(INSTRUMENTATIONS[name])()
        if instrumentor.is_instrumented_by_opentelemetry:
            continue
        options: dict[str, Any] = {}
        if name == "django" and "OTEL_PYTHON_DJANGO_EXCLUDED_URLS" not in os.environ:
            options["excluded_urls"] = DJANGO_EXCLUDED_URLS
        instrumentor.instrument(**options)
        done.append(name)
    return done


def setup_from_environment() -> bool:
    """At process start (the app's ready()): tracing and instrumentations, if asked for."""
    if configure() is None:
        return False
    log.info("tracing on: exporters %s, instrumentations %s", exporter_names(), instrument_libraries())
    return True


def enabled() -> bool:
    return _provider is not None


def flush(timeout_millis: int = 5000) -> None:
    """Export finished spans now: an RQ work horse ends with os._exit, which runs no exit hook."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def tracer() -> trace.Tracer:
    return trace.get_tracer("recovery")


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@contextlib.contextmanager
def span(
    name: str,
    attributes: dict[str, Any] | None = None,
    *,
    context: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] = (),
) -> Iterator[trace.Span]:
    """A span of our own, current for the block; an exception is recorded on it and re-raised.
    None attribute values are left out."""
    with tracer().start_as_current_span(
        name, context=context, kind=kind, links=list(links), attributes=_attributes(attributes or {})
    ) as current:
        yield current


@contextlib.contextmanager
def forced_ids(trace_id: int, span_id: int) -> Iterator[None]:
    token = _forced_ids.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced_ids.reset(token)


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(value: Any) -> SpanContext | None:
    """A W3C traceparent header value (text, bytes or an SQS attribute) as a remote span context."""
    if isinstance(value, dict):
        value = value.get("StringValue")
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _TRACEPARENT.match(str(value or "").strip().lower())
    if not match or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    trace_id, span_id, flags = int(match.group(1), 16), int(match.group(2), 16), int(match.group(3), 16)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def current_traceparent() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format_traceparent(context) if context.is_valid else None
