"""Ending a drill run: its outcome and final job state, the drill's counters and the audit event,
in one transaction; after it commits, the run's result in the metrics
(recovery_drill_results_total, recovery_drill_duration_seconds) and the alert of a run that did
not pass."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.models import AuditAction, Drill, DrillOutcome, DrillRun
from recovery.models.drills import OUTCOME_STATE
from recovery.observability.drills import drill_finished


def drill_run_close(
    run: DrillRun, *, outcome: str, failed_step: str = "", reason: str = "", error: str = "", audit: bool = True
) -> bool:
    """End a run with ``outcome`` (passed, failed or skipped), once: the first caller wins (a
    conditional UPDATE on a blank outcome: every end of a run sets one, so a run without one has
    not ended, or was just retired by the job watchdog, whose hook ends it in the same
    transaction). Its job state follows the outcome (passed -> succeeded, failed -> failed,
    skipped -> cancelled). ``error``: the job's own trouble, if that is what ended it (a blank
    one leaves the row's as it is). ``audit=False`` only where the caller's own event records
    the run."""
    now = timezone.now()
    passed = outcome == DrillOutcome.PASSED
    fields = {"error": error[:4000]} if error else {}
    with transaction.atomic():
        moved = DrillRun.objects.filter(pk=run.pk, outcome="").update(
            state=OUTCOME_STATE[DrillOutcome(outcome)], outcome=outcome, failed_step=failed_step, reason=reason[:5000],
            finished_at=now, heartbeat_at=now, step="", **fields,
        )  # fmt: skip
        if not moved:
            return False
        Drill.objects.filter(pk=run.drill_id).update(
            runs_total=F("runs_total") + 1,
            failures_total=F("failures_total") + (0 if passed else 1),
            consecutive_failures=0 if passed else F("consecutive_failures") + 1,
            last_run_at=now,
            last_outcome=outcome,
        )
        run.refresh_from_db()
        if audit:
            audit_record(
                actor="drill", action=AuditAction.DRILL_RUN_FINISHED, obj=run,
                summary=f"drill {run.drill.name!r} run {run.pk} {outcome}{_why(failed_step, reason)}"[:500],
                after={"state": outcome, "job_state": run.state, "failed_step": failed_step, "lost": run.lost,
                       "duplicates": run.duplicates, "unexplained_duplicates": run.unexplained_duplicates,
                       "time_to_capture_seconds": run.time_to_capture_seconds,
                       "time_to_recover_seconds": run.time_to_recover_seconds, "expectations": run.expectations,
                       **({"error": run.error} if run.error else {})},
            )  # fmt: skip
        seconds = (now - run.started_at).total_seconds() if run.started_at else 0.0
        transaction.on_commit(lambda: drill_finished(name=run.drill.name, ok=passed, seconds=seconds), robust=True)
        if not passed:
            from recovery.drills.alerts import drill_run_alert

            transaction.on_commit(lambda: drill_run_alert(run.pk), robust=True)
    return True


def _why(failed_step: str, reason: str) -> str:
    if failed_step:
        return f" at step {failed_step}: {reason}"
    return f": {reason}" if reason else ""
