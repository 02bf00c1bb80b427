"""Reads shaped for the drill screens (console/views/drills.py): the list with each drill's pass
rate, whether a user may approve a drill (and why not), a run's steps in order with their timings,
and the geometry of the server-rendered SVG charts (no JavaScript). Writes stay in services.py;
these only read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from recovery.drills.selectors import DrillTrend, drill_approve_refusal, drills_list
from recovery.models import Drill, DrillOutcome, DrillRun, DrillStep

ROW_HEIGHT = 12  # the step timing chart: one line per step
ROLLING_RUNS = 5  # the pass-rate line: share of the last five finished runs that passed
MIN_SLOTS = 10  # the trend charts: room for at least ten runs
RATE_PAD = 4  # the pass-rate chart: 100 % and 0 % sit this far inside its edges
COLOURS = {DrillOutcome.PASSED: "#17803d", DrillOutcome.FAILED: "#c0262d", DrillOutcome.SKIPPED: "#8a8f99"}


def drill_rows() -> list[Drill]:
    """The list page: drills_list() plus ``finished_runs`` and ``passed_runs`` over all runs, and
    ``latest_failed_label`` (the failing step in words)."""
    rows = list(
        drills_list().annotate(
            finished_runs=Count("runs", filter=Q(runs__outcome__in=DrillOutcome.values), distinct=True),
            passed_runs=Count("runs", filter=Q(runs__outcome=DrillOutcome.PASSED), distinct=True),
        )
    )
    labels = dict(DrillStep.choices)
    for row in rows:
        row.latest_failed_label = labels.get(row.latest_failed_step, row.latest_failed_step or "")  # type: ignore[attr-defined]
    return rows


def drill_approve_blocker(drill: Drill, user: Any) -> str:
    """Why ``user`` may not approve the drill's current version ('' when they may): the rule
    drill_approve enforces, so the page says so instead of offering a button that is refused."""
    return drill_approve_refusal(drill, user)[1]


@dataclass
class StepRow:
    """One step of a run, reached or not, with its timing relative to the run's start."""

    step: str
    label: str
    status: str  # ok, failed, running, not reached
    offset: float | None = None
    seconds: float | None = None
    reason: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)
    bar: dict[str, float] = field(default_factory=dict)


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def drill_run_steps(run: DrillRun, *, width: int = 600) -> list[StepRow]:
    """Every step in order with what the run recorded for it (the latest entry of a step wins:
    the replay step is recorded when the replay ends), and a bar for the timing chart."""
    recorded = {entry.get("step"): entry for entry in run.steps or [] if isinstance(entry, dict)}
    active = run.active
    rows = []
    for step in DrillStep:
        entry = recorded.get(step.value)
        if entry is None:
            status = "running" if active and run.step == step.value else "not reached"
            rows.append(StepRow(step=step.value, label=step.label, status=status))
            continue
        started = _when(entry.get("started_at"))
        detail = entry.get("detail") if isinstance(entry.get("detail"), dict) else {}
        rows.append(
            StepRow(
                step=step.value,
                label=step.label,
                status="ok" if entry.get("ok") else "failed",
                offset=(started - run.started_at).total_seconds() if started and run.started_at else None,
                seconds=entry.get("seconds"),
                reason=str(detail.get("reason", "")),
                details=[(key, _shown(value)) for key, value in detail.items() if key != "reason"],
            )
        )
    _bars(rows, width)
    return rows


def _bars(rows: list[StepRow], width: int) -> None:
    """One line per step (ROW_HEIGHT apart, in table order), from its start to its end."""
    end = max((r.offset + r.seconds for r in rows if r.offset is not None and r.seconds is not None), default=0.0)
    for index, row in enumerate(rows):
        if row.offset is None or row.seconds is None:
            continue
        x = max(row.offset, 0.0) * width / (end or 1.0)
        w = max(row.seconds * width / (end or 1.0), 2.0)
        row.bar = {"x": round(x, 1), "w": round(w, 1), "y": index * ROW_HEIGHT + 2, "h": ROW_HEIGHT - 4}


def drill_trend_charts(
    trend: DrillTrend, *, target_seconds: float, width: int = 600, height: int = 120
) -> dict[str, Any]:
    """Two SVG charts of the trend, oldest run first, one slot per run (at least MIN_SLOTS, so a
    young drill's few bars stay narrow): time to recover per run, a bar coloured by outcome (a
    faint full-height one where the run never recovered), scaled to the runs' own times, with the
    expected maximum as a dashed line when it falls inside the chart; and the pass rate over the
    last ROLLING_RUNS runs at each run."""
    points = trend.points
    recovered = [p.time_to_recover for p in points if p.time_to_recover is not None]
    top = max(recovered) * 1.25 if recovered and max(recovered) > 0 else max(target_seconds * 1.1, 1.0)
    step = width / max(len(points), MIN_SLOTS)
    bars, rate_points = [], []
    for index, point in enumerate(points):
        h = height if point.time_to_recover is None else point.time_to_recover * height / top
        bars.append({
            "x": round(index * step + step * 0.15, 1), "w": round(step * 0.7, 1), "h": round(h, 1),
            "y": round(height - h, 1), "colour": COLOURS.get(point.outcome, "#8a8f99"),
            "faint": point.time_to_recover is None, "point": point,
        })  # fmt: skip
        window = points[max(index + 1 - ROLLING_RUNS, 0) : index + 1]
        rate = sum(1 for p in window if p.passed) / len(window)
        y = RATE_PAD + (1 - rate) * (height - 2 * RATE_PAD)
        rate_points.append({"x": round(index * step + step / 2, 1), "y": round(y, 1), "rate": rate, "point": point})
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "top": round(top, 1),
        "target_y": round(height - target_seconds * height / top, 1) if target_seconds <= top else None,
        "rate_points": rate_points,
        "rate_line": " ".join(f"{p['x']},{p['y']}" for p in rate_points),
        "rolling": ROLLING_RUNS,
    }
