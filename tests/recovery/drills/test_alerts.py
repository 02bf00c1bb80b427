"""A failing drill raises an alert: an ERROR log line, counters on the drill for a /metrics
exporter, and an optional webhook POST (JSON, short timeout) whose failure is logged, not fatal.
The webhook is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from recovery.drills import alerts
from recovery.drills.outcome import drill_run_close
from recovery.drills.selectors import drill_metrics
from recovery.models import AuditEvent, DrillOutcome, DrillRun, DrillTrigger, JobState
from tests.factories import DrillRunFactory
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers["Content-Type"], json.loads(body)))  # type: ignore[attr-defined]
        if self.server.delay:  # type: ignore[attr-defined]
            time.sleep(self.server.delay)  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.received, server.status, server.delay = [], 204, 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hooks/drills"


def _fail(drill: Any, capture: Any, **fields: Any) -> DrillRun:
    run = DrillRunFactory(drill=drill, state=JobState.RUNNING)
    with capture(execute=True):
        drill_run_close(run, outcome=DrillOutcome.FAILED, failed_step="verified", reason="2 not recovered", **fields)
    run.refresh_from_db()
    return run


def test_a_failed_run_logs_an_error_counts_and_posts_the_webhook(
    make_drill: Any, hook: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    drill = make_drill(alert_webhook_url=_url(hook))
    with caplog.at_level(logging.ERROR, logger="recovery.drills"):
        run = _fail(drill, django_capture_on_commit_callbacks)
    assert any(r.levelno == logging.ERROR and "failed at step verified" in r.getMessage() for r in caplog.records)
    ((content_type, payload),) = hook.received
    assert content_type == "application/json"
    assert payload["drill"] == drill.name and payload["failed_step"] == "verified" and payload["run"] == run.pk
    assert (payload["event"], payload["state"]) == ("drill.run_failed", "failed")
    assert (run.state, run.outcome, run.error) == (JobState.FAILED, DrillOutcome.FAILED, ""), "not its job: no error"
    assert run.alerted_at is not None and run.alert_error == ""
    drill.refresh_from_db()
    assert (drill.failures_total, drill.consecutive_failures, drill.last_outcome) == (1, 1, "failed")
    (row,) = [m for m in drill_metrics() if m["drill"] == drill.name]
    assert (row["runs_total"], row["failures_total"], row["consecutive_failures"]) == (1, 1, 1)
    assert AuditEvent.objects.filter(action="drill.run_finished", object_id=str(run.pk)).count() == 1


def test_a_webhook_that_fails_is_logged_not_fatal(
    make_drill: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    drill = make_drill(alert_webhook_url=f"http://127.0.0.1:{free_port()}/nobody-listens")
    with caplog.at_level(logging.WARNING, logger="recovery.drills"):
        run = _fail(drill, django_capture_on_commit_callbacks)
    assert run.outcome == DrillOutcome.FAILED and run.state == JobState.FAILED and run.alert_error
    assert any("alert webhook failed" in r.getMessage() for r in caplog.records)


def test_a_slow_webhook_is_given_up_after_the_short_timeout(
    make_drill: Any, hook: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    monkeypatch.setattr(alerts, "WEBHOOK_TIMEOUT", 0.3)
    hook.delay = 2
    drill = make_drill(alert_webhook_url=_url(hook))
    started = time.monotonic()
    run = _fail(drill, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 1.5
    assert "timed out" in run.alert_error.lower() or "timeout" in run.alert_error.lower(), run.alert_error


def test_an_http_error_from_the_webhook_is_recorded(
    make_drill: Any, hook: Any, django_capture_on_commit_callbacks: Any
) -> None:
    hook.status = 500
    drill = make_drill(alert_webhook_url=_url(hook))
    run = _fail(drill, django_capture_on_commit_callbacks)
    assert run.alert_error.startswith("HTTP 500")


def test_a_passing_run_raises_no_alert_and_resets_the_streak(
    make_drill: Any, hook: Any, django_capture_on_commit_callbacks: Any
) -> None:
    drill = make_drill(alert_webhook_url=_url(hook))
    _fail(drill, django_capture_on_commit_callbacks)
    run = DrillRunFactory(drill=drill, state=JobState.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        assert drill_run_close(run, outcome=DrillOutcome.PASSED)
        assert not drill_run_close(run, outcome=DrillOutcome.FAILED), "a run ends once"
    assert len(hook.received) == 1
    run.refresh_from_db()
    assert (run.state, run.outcome, run.status) == (JobState.SUCCEEDED, DrillOutcome.PASSED, "passed")
    drill.refresh_from_db()
    assert (drill.runs_total, drill.failures_total, drill.consecutive_failures) == (2, 1, 0)


def test_a_skipped_run_alerts_as_skipped_not_failed(
    make_drill: Any, hook: Any, django_capture_on_commit_callbacks: Any
) -> None:
    drill = make_drill(alert_webhook_url=_url(hook))
    run = DrillRunFactory(drill=drill, trigger=DrillTrigger.SCHEDULE)
    with django_capture_on_commit_callbacks(execute=True):
        assert drill_run_close(run, outcome=DrillOutcome.SKIPPED, reason="not run: it has not been approved")
    ((_, payload),) = hook.received
    assert (payload["event"], payload["state"], payload["failed_step"]) == ("drill.run_skipped", "skipped", "")
    run.refresh_from_db()
    assert (run.state, run.outcome, run.status) == (JobState.CANCELLED, DrillOutcome.SKIPPED, "skipped")
