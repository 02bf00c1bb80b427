"""Ending a drill run: its final state, the drill's counters and the audit event, in one
transaction; after it commits, the run's result in the metrics (recovery_drill_results_total,
recovery_drill_duration_seconds) and the alert of a run that did not pass."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.models import DRILL_RUN_ACTIVE, AuditAction, Drill, DrillRun, DrillRunState
from recovery.observability.drills import drill_finished


def drill_run_close(run: DrillRun, *, state: str, failed_step: str = "", reason: str = "", audit: bool = True) -> bool:
    """Move an active run to ``state`` (passed, failed or skipped), once: the first caller wins
    (conditional UPDATE). ``audit=False`` only where the caller's own event records the run."""
    now = timezone.now()
    passed = state == DrillRunState.PASSED
    with transaction.atomic():
        moved = DrillRun.objects.filter(pk=run.pk, state__in=DRILL_RUN_ACTIVE).update(
            state=state, failed_step=failed_step, reason=reason[:5000], finished_at=now, step="", lease_owner="",
            lease_until=None,
        )  # fmt: skip
        if not moved:
            return False
        Drill.objects.filter(pk=run.drill_id).update(
            runs_total=F("runs_total") + 1,
            failures_total=F("failures_total") + (0 if passed else 1),
            consecutive_failures=0 if passed else F("consecutive_failures") + 1,
            last_run_at=now,
            last_outcome=state,
        )
        run.refresh_from_db()
        if audit:
            audit_record(
                actor="drill", action=AuditAction.DRILL_RUN_FINISHED, obj=run,
                summary=f"drill {run.drill.name!r} run {run.pk} {state}{_why(failed_step, reason)}"[:500],
                after={"state": state, "failed_step": failed_step, "lost": run.lost, "duplicates": run.duplicates,
                       "unexplained_duplicates": run.unexplained_duplicates,
                       "time_to_capture_seconds": run.time_to_capture_seconds,
                       "time_to_recover_seconds": run.time_to_recover_seconds, "expectations": run.expectations},
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
