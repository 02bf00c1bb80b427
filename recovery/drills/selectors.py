"""Reads about drills: whether a drill's standing approval still counts (invariant 7), its run
history and trend (time to recover, pass rate), the failing drills for the overview, and the
counters a /metrics exporter reads."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Case, CharField, F, OuterRef, Q, QuerySet, Subquery, Value, When

from recovery.drills.errors import DrillFourEyes
from recovery.drills.validation import content_hash
from recovery.errors import InvalidInput, NotPermitted, RecoveryError
from recovery.models import (
    DRILL_RUN_ACTIVE,
    AuditAction,
    AuditEvent,
    Drill,
    DrillApproval,
    DrillOutcome,
    DrillRun,
    DrillRunState,
)
from recovery.permissions import Capability, user_can

NOT_PASSED = (DrillOutcome.FAILED, DrillOutcome.SKIPPED)
FINISHED = Q(outcome__in=DrillOutcome.values)  # an ended run has its outcome: passed, failed or skipped


def drill_run_status() -> Case:
    """DrillRun.status in SQL: the outcome once the run ended, "replaying" during its replay
    phase, else the job's state."""
    return Case(
        When(FINISHED, then=F("outcome")),
        When(replay_run__isnull=False, state__in=DRILL_RUN_ACTIVE, then=Value(DrillRunState.REPLAYING.value)),
        default=F("state"),
        output_field=CharField(),
    )


def drill_approval_problem(drill: Drill) -> tuple[DrillApproval | None, str]:
    """(the approval that counts, '') or (None, why the drill is not approved). An approval counts
    while it matches the drill's current content, is not voided, and its approver is still an
    active approver who is not the drill's author."""
    current = content_hash(drill)
    approvals = drill.approvals.filter(voided_at__isnull=True).select_related("approver").order_by("-created_at")
    latest = approvals.first()
    if latest is None:
        voided = drill.approvals.exclude(voided_at__isnull=True).order_by("-voided_at").first()
        if voided is not None:
            return (
                None,
                f"its approval was voided by a change on {voided.voided_at:%Y-%m-%d %H:%M} UTC: approve it again",
            )
        return None, "it has not been approved: an approver other than its author must approve it"
    if latest.content_hash != current:
        return None, "it changed since it was approved: an approver must approve it again"
    if latest.approver_id == drill.author_id:
        return None, "its approver is its author (four eyes): another approver must approve it"
    if not user_can(latest.approver, Capability.APPROVE):
        return None, f"its approver {latest.approver.get_username()} no longer holds the approver role"
    return latest, ""


def drill_approve_refusal(drill: Drill, user: Any) -> tuple[type[RecoveryError] | None, str]:
    """Why ``user`` may not approve the drill's current version, as (error class, message), or
    (None, '') when they may. The one statement of the rule (invariant 7): drill_approve raises
    it, the drill page reads it to offer the button or say why not."""
    if not user_can(user, Capability.APPROVE):
        return NotPermitted, "approving a drill needs the approver role"
    if user.pk == drill.author_id:
        return DrillFourEyes, "the author of a drill cannot approve it (four eyes)"
    shaped = AuditEvent.objects.filter(
        object_type="recovery.drill", object_id=str(drill.pk), actor_id=user.pk,
        action__in=(AuditAction.DRILL_CREATED, AuditAction.DRILL_UPDATED),
    )  # fmt: skip
    if shaped.exists():
        return DrillFourEyes, "you changed this drill: someone else must approve it (four eyes)"
    if drill.approvals.filter(voided_at__isnull=True, content_hash=content_hash(drill), approver=user).exists():
        return InvalidInput, "you have already approved this version of the drill"
    return None, ""


def drill_approval_current(drill: Drill) -> DrillApproval | None:
    return drill_approval_problem(drill)[0]


def drill_active_run(drill: Drill) -> DrillRun | None:
    return drill.runs.filter(state__in=DRILL_RUN_ACTIVE).order_by("-created_at").first()


def drills_list() -> QuerySet[Drill]:
    """Every drill with its broker and its latest run's id, status (DrillRun.status) and failing
    step (``latest_run_id``, ``latest_status``, ``latest_failed_step``) for the list page."""
    latest = DrillRun.objects.filter(drill=OuterRef("pk")).order_by("-created_at", "-id")
    return Drill.objects.select_related("broker", "author").annotate(
        latest_run_id=Subquery(latest.values("id")[:1]),
        latest_status=Subquery(latest.annotate(status=drill_run_status()).values("status")[:1]),
        latest_failed_step=Subquery(latest.values("failed_step")[:1]),
    )


def drill_history(drill: Drill, *, limit: int = 50) -> list[DrillRun]:
    """The drill's latest runs, newest first (steps, expectations and counts are on each row)."""
    return list(drill.runs.select_related("requested_by", "plan", "replay_run").order_by("-created_at", "-id")[:limit])


@dataclass(frozen=True)
class TrendPoint:
    run_id: int
    at: datetime
    outcome: str  # passed, failed or skipped
    passed: bool
    time_to_capture: float | None
    time_to_recover: float | None
    failed_step: str


@dataclass
class DrillTrend:
    """What a trend chart needs: one point per finished run (oldest first) and the summary."""

    points: list[TrendPoint] = field(default_factory=list)
    runs: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    pass_rate: float | None = None  # 0..1 over finished runs
    median_time_to_recover: float | None = None
    worst_time_to_recover: float | None = None

    def as_chart(self) -> dict[str, Any]:
        """JSON for a chart script: labels, time-to-recover series and the pass flags."""
        return {
            "labels": [p.at.isoformat(timespec="seconds") for p in self.points],
            "runs": [p.run_id for p in self.points],
            "time_to_recover": [p.time_to_recover for p in self.points],
            "time_to_capture": [p.time_to_capture for p in self.points],
            "passed": [p.passed for p in self.points],
            "pass_rate": self.pass_rate,
        }


def drill_trend(drill: Drill, *, limit: int = 30) -> DrillTrend:
    """The last ``limit`` finished runs: time to capture/recover per run and the pass rate."""
    rows = list(
        drill.runs.filter(FINISHED)
        .order_by("-created_at", "-id")
        .values("id", "created_at", "finished_at", "outcome", "time_to_capture_seconds", "time_to_recover_seconds",
                "failed_step")[:limit]
    )  # fmt: skip
    trend = DrillTrend()
    for row in reversed(rows):
        trend.points.append(
            TrendPoint(
                run_id=row["id"], at=row["finished_at"] or row["created_at"], outcome=row["outcome"],
                passed=row["outcome"] == DrillOutcome.PASSED, time_to_capture=row["time_to_capture_seconds"],
                time_to_recover=row["time_to_recover_seconds"], failed_step=row["failed_step"],
            )
        )  # fmt: skip
    trend.runs = len(trend.points)
    trend.passed = sum(1 for p in trend.points if p.passed)
    trend.skipped = sum(1 for p in trend.points if p.outcome == DrillOutcome.SKIPPED)
    trend.failed = trend.runs - trend.passed - trend.skipped
    trend.pass_rate = trend.passed / trend.runs if trend.runs else None
    recovered = [p.time_to_recover for p in trend.points if p.passed and p.time_to_recover is not None]
    if recovered:
        trend.median_time_to_recover = statistics.median(recovered)
        trend.worst_time_to_recover = max(recovered)
    return trend


def drills_failing(*, limit: int = 10) -> list[tuple[Drill, DrillRun]]:
    """Drills whose latest finished run failed or was skipped, with that run (for the overview)."""
    latest = DrillRun.objects.filter(FINISHED, drill=OuterRef("pk")).order_by("-created_at", "-id")
    drills = (
        Drill.objects.annotate(
            latest_id=Subquery(latest.values("id")[:1]), latest_outcome=Subquery(latest.values("outcome")[:1])
        )
        .filter(latest_outcome__in=NOT_PASSED)
        .select_related("broker")
        .order_by("-last_run_at")[:limit]
    )  # fmt: skip
    drills = list(drills)
    runs = DrillRun.objects.in_bulk([d.latest_id for d in drills])
    return [(d, runs[d.latest_id]) for d in drills]


def drill_metrics() -> list[dict[str, Any]]:
    """One row per drill for a /metrics exporter: counters kept on the drill by the runner."""
    return [
        {
            "drill": row["name"], "broker": row["broker__kind"], "runs_total": row["runs_total"],
            "failures_total": row["failures_total"], "consecutive_failures": row["consecutive_failures"],
            "last_outcome": row["last_outcome"], "last_run_at": row["last_run_at"], "enabled": row["enabled"],
        }
        for row in Drill.objects.order_by("name").values(
            "name", "broker__kind", "runs_total", "failures_total", "consecutive_failures", "last_outcome",
            "last_run_at", "enabled",
        )
    ]  # fmt: skip
