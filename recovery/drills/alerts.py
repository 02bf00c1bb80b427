"""A drill run that did not pass raises an alert: an ERROR log line, counters a /metrics
exporter reads (kept on the Drill by recovery.drills.outcome: runs_total, failures_total,
consecutive_failures, last_outcome; see selectors.drill_metrics), and an optional webhook POST
of JSON with a short timeout. A webhook that fails is logged and recorded on the run
(``alert_error``), never fatal: the run's outcome is already committed."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.utils import timezone

from recovery.models import DrillOutcome, DrillRun

log = logging.getLogger("recovery.drills")

WEBHOOK_TIMEOUT = 3.0  # seconds: an alert must never hold a worker


def alert_payload(run: DrillRun) -> dict[str, Any]:
    """The webhook's JSON body (also a fair summary for any other alert channel)."""
    drill = run.drill
    return {
        "event": "drill.run_skipped" if run.outcome == DrillOutcome.SKIPPED else "drill.run_failed",
        "drill": drill.name,
        "broker": drill.broker.name,
        "run": run.pk,
        "state": run.status,  # its outcome: failed or skipped
        "failed_step": run.failed_step,
        "reason": run.reason[:2000],
        "error": run.error[:2000],  # the job's own trouble, when that is what failed it
        "lost": run.lost,
        "duplicates": run.duplicates,
        "time_to_recover_seconds": run.time_to_recover_seconds,
        "consecutive_failures": drill.consecutive_failures,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def webhook_url(run: DrillRun) -> str:
    """The drill's own webhook, else the installation's RECOVERY_DRILL_ALERT_WEBHOOK (if set)."""
    return run.drill.alert_webhook_url or settings.RECOVERY_DRILL_ALERT_WEBHOOK


def _post(url: str, payload: dict[str, Any]) -> str:
    """POST ``payload``; '' on a 2xx answer, else what went wrong."""
    request = urllib.request.Request(  # noqa: S310 - http(s) checked when the drill was saved
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
            return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def drill_run_alert(run_id: int) -> str:
    """Raise the alert of a run that did not pass (after its outcome committed). Returns the
    webhook error ('' when delivered or when no webhook is configured)."""
    run = DrillRun.objects.select_related("drill__broker").get(pk=run_id)
    log.error(
        "drill %s run %s %s%s: %s",
        run.drill.name, run.pk, run.status, f" at step {run.failed_step}" if run.failed_step else "", run.reason[:500],
    )  # fmt: skip
    error = ""
    url = webhook_url(run)
    if url:
        error = _post(url, alert_payload(run))
        if error:
            log.warning("drill %s run %s: alert webhook failed: %s", run.drill.name, run.pk, error)
    DrillRun.objects.filter(pk=run.pk).update(alerted_at=timezone.now(), alert_error=error[:2000])
    return error
