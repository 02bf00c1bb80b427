"""Who and where an action comes from: set per request by console.middleware, read by
audit_record. Jobs run without a request and name a system actor instead."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    client_ip: str = ""
    user_agent: str = ""
    trace_id: str = ""


_NO_REQUEST = RequestContext()
current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "recovery_audit_request", default=None
)


def request_context() -> RequestContext:
    """The current request's context, or an empty one outside a request (jobs, commands)."""
    return current_request.get() or _NO_REQUEST


def current_trace_id() -> str:
    """The active OpenTelemetry trace id, or the request's traceparent trace id, or ''."""
    try:
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            return format(span_context.trace_id, "032x")
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        pass
    return request_context().trace_id
