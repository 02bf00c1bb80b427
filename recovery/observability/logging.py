"""JSON-lines logs, one configuration for web and workers (settings.LOGGING).

Each record is one line: time (UTC, ISO 8601), level, logger, message, and the context it was
logged in: request id and user (set by console.middleware), job and run id (set by
recovery.observability.jobs), trace and span id (the current OpenTelemetry span, else the
request's incoming traceparent). Fields a caller passes with ``extra=`` are kept when they are
plain values.

No secret reaches a line (invariant 9 holds for logs too): URL credentials, Authorization and
bearer values, ``password=``/``token=``-style pairs and the configured secrets themselves
(SECRET_KEY, AUDIT_HMAC_KEY, RECOVERY_METRICS_TOKEN) are replaced by ``***``, in the message and in
the exception text alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("recovery_log_context", default=_EMPTY)

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)
_AUTHORIZATION = re.compile(r"\b(?P<kind>bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}", re.I)
_PAIRS = re.compile(
    r"(?P<key>[\w-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|authorization|credentials?)[\w-]*)"
    r"(?P<sep>['\"]?\s*[:=]\s*['\"]?)(?P<value>[^\s'\",;&]+)",
    re.I,
)
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CONTEXT_FIELDS = ("request_id", "user", "job", "job_id", "run_id")
_ALWAYS = ("request_id", "user", "run_id")  # present in every line (null outside a request or run)


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to the logging context of this request or job; reset with ``unbind(token)``."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v not in (None, "")}})


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def log_context() -> dict[str, Any]:
    return dict(_context.get())


def _configured_secrets() -> list[str]:
    try:
        from django.conf import settings

        values = [settings.SECRET_KEY, settings.AUDIT_HMAC_KEY, getattr(settings, "RECOVERY_METRICS_TOKEN", None)]
    except Exception:  # noqa: BLE001 - settings not configured (a script): patterns still apply
        return []
    texts = [v.decode() if isinstance(v, bytes) else v for v in values if v]
    return [t for t in texts if isinstance(t, str) and len(t) >= 8]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with credentials and configured secrets replaced by ***."""
    for secret in _configured_secrets() if secrets is None else secrets:
        text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['kind']} ***", text)
    return _PAIRS.sub(lambda m: f"{m['key']}{m['sep']}***", text)


def _trace_ids() -> tuple[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x"), format(context.span_id, "016x")
    from recovery.audit.context import request_context

    return request_context().trace_id, ""


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        secrets = _configured_secrets()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage(), secrets),
        }
        context = _context.get()
        for name in _CONTEXT_FIELDS:
            if name in context or name in _ALWAYS:
                line[name] = context.get(name)
        trace_id, span_id = _trace_ids()
        line["trace_id"] = trace_id or None
        if span_id:
            line["span_id"] = span_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):
                line[key] = redact(value, secrets) if isinstance(value, str) else _plain(value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info), secrets)
        elif record.exc_text:
            line["exception"] = redact(record.exc_text, secrets)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)
