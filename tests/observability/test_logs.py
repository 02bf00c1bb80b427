"""Logs are JSON lines with the context they were written in, for web and workers alike, and
never carry a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.conf import settings as django_settings

from recovery.observability import tracing
from recovery.observability.logging import JsonFormatter, bound
from recovery.permissions import Role


def _capture(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    return logger, stream, handler


def test_the_settings_configure_json_lines_for_every_process() -> None:
    formatters = [h.formatter for h in logging.getLogger().handlers]
    assert any(isinstance(f, JsonFormatter) for f in formatters)
    assert django_settings.CELERY_WORKER_HIJACK_ROOT_LOGGER is False  # Celery keeps this configuration


def test_a_record_is_one_line_with_its_context(spans) -> None:
    logger, stream, handler = _capture("tests.observability.one")
    try:
        with bound(request_id="req-12345678", user="alice", run_id=42), tracing.span("work") as span:
            logger.warning("replayed %d of %d\nsecond line", 3, 4, extra={"dlq": "orders.DLQ"})
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "warning" and line["logger"] == "tests.observability.one"
    assert line["message"] == "replayed 3 of 4\nsecond line"
    assert line["time"].endswith("Z") and "T" in line["time"]
    context = (line["request_id"], line["user"], line["run_id"], line["dlq"])
    assert context == ("req-12345678", "alice", 42, "orders.DLQ")
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_the_context_fields_are_there_outside_a_request_too() -> None:
    logger, stream, handler = _capture("tests.observability.bare")
    try:
        logger.info("plain")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert {"time", "level", "logger", "message", "request_id", "user", "run_id", "trace_id"} <= set(line)
    assert line["request_id"] is None and line["trace_id"] is None


def test_secrets_never_reach_a_line(settings) -> None:
    settings.RECOVERY_METRICS_TOKEN = "metrics-token-" + "m" * 30
    logger, stream, handler = _capture("tests.observability.secrets")
    secrets = ["s3cr3t-broker-pass", "hunter2hunter2", "eyJhbGciOiJIUzI1NiJ9.payload.sig", "AKIA-secret-value-123",
               settings.SECRET_KEY, settings.AUDIT_HMAC_KEY.decode(), settings.RECOVERY_METRICS_TOKEN]  # fmt: skip
    try:
        logger.error("connecting to amqp://guest:s3cr3t-broker-pass@rabbit:5672/%2F failed")
        logger.error("login with password=hunter2hunter2 refused")
        logger.error("sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
        logger.error("config {'aws_secret_access_key': 'AKIA-secret-value-123'}")
        logger.error("keys %s %s %s", settings.SECRET_KEY, settings.AUDIT_HMAC_KEY, settings.RECOVERY_METRICS_TOKEN)
        try:
            raise ConnectionError("redis://:s3cr3t-broker-pass@cache:6379/0 unreachable")
        except ConnectionError:
            logger.exception("job failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert len(output.splitlines()) == 6  # the traceback is inside its line
    for secret in secrets:
        assert secret not in output
    assert "amqp://guest:***@rabbit" in output


@pytest.mark.django_db
def test_a_request_logs_its_request_id_and_user(client_for) -> None:
    logger, stream, handler = _capture("django.request")
    try:
        response = client_for(Role.OPERATOR).get("/settings/", HTTP_X_REQUEST_ID="req-abcdef123456")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 403
    line = json.loads(stream.getvalue().splitlines()[0])
    assert line["request_id"] == "req-abcdef123456"
    assert line["user"].startswith("user")
    assert "Forbidden" in line["message"]
