"""What the drill screens read: history, the trend (time to recover, pass rate), the failing
drills for the overview, and the list with each drill's latest run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from recovery.drills.selectors import drill_history, drill_trend, drills_failing, drills_list
from recovery.models import DrillOutcome, DrillRun, DrillTrigger, JobState
from recovery.models.drills import OUTCOME_STATE
from tests.factories import DrillRunFactory, ReplayRunFactory

pytestmark = pytest.mark.django_db


def _status(status: str) -> dict[str, str]:
    """The stored fields of a run shown as ``status``: an ended run's outcome and job state, or
    an active run's job state."""
    if status in DrillOutcome.values:
        return {"state": OUTCOME_STATE[DrillOutcome(status)], "outcome": status}
    return {"state": status}


def _runs(drill: Any, *outcomes: tuple[str, float | None]) -> list[DrillRun]:
    start = timezone.now() - timedelta(hours=len(outcomes))
    made = []
    for index, (status, recover) in enumerate(outcomes):
        run = DrillRunFactory(
            drill=drill, trigger=DrillTrigger.SCHEDULE, slot=start + timedelta(hours=index), **_status(status),
            time_to_recover_seconds=recover, time_to_capture_seconds=1.5 if recover else None,
            failed_step="verified" if status == DrillOutcome.FAILED else "",
        )  # fmt: skip
        DrillRun.objects.filter(pk=run.pk).update(created_at=start + timedelta(hours=index))
        made.append(run)
    drill.last_run_at = timezone.now()
    drill.save()
    return made


def test_the_trend_has_one_point_per_finished_run_oldest_first(make_drill: Any) -> None:
    drill = make_drill()
    runs = _runs(drill, ("passed", 10.0), ("failed", None), ("passed", 30.0), ("skipped", None), ("running", None))
    trend = drill_trend(drill)
    assert [p.run_id for p in trend.points] == [r.pk for r in runs[:4]]
    assert (trend.runs, trend.passed, trend.failed, trend.skipped) == (4, 2, 1, 1)
    assert trend.pass_rate == 0.5
    assert (trend.median_time_to_recover, trend.worst_time_to_recover) == (20.0, 30.0)
    chart = trend.as_chart()
    assert chart["time_to_recover"] == [10.0, None, 30.0, None] and chart["passed"] == [True, False, True, False]


def test_an_unrun_drill_has_an_empty_trend(make_drill: Any) -> None:
    trend = drill_trend(make_drill())
    assert (trend.runs, trend.pass_rate, trend.median_time_to_recover) == (0, None, None)


def test_history_is_newest_first(make_drill: Any) -> None:
    drill = make_drill()
    runs = _runs(drill, ("passed", 5.0), ("failed", None))
    assert [r.pk for r in drill_history(drill)] == [runs[1].pk, runs[0].pk]


def test_the_overview_lists_drills_whose_latest_finished_run_did_not_pass(make_drill: Any) -> None:
    healthy, broken, recovered = make_drill(), make_drill(), make_drill()
    _runs(healthy, ("passed", 4.0))
    failing = _runs(broken, ("passed", 4.0), ("failed", None), ("running", None))
    _runs(recovered, ("failed", None), ("passed", 3.0))
    assert [(d.pk, r.pk) for d, r in drills_failing()] == [(broken.pk, failing[1].pk)]


def test_the_list_carries_each_drills_latest_run(make_drill: Any) -> None:
    drill = make_drill()
    runs = _runs(drill, ("passed", 4.0), ("failed", None))
    row = drills_list().get(pk=drill.pk)
    assert (row.latest_run_id, row.latest_status, row.latest_failed_step) == (runs[1].pk, "failed", "verified")


def test_the_list_shows_a_run_in_its_replay_phase_as_replaying(make_drill: Any, people: dict[str, Any]) -> None:
    drill = make_drill()
    replay = ReplayRunFactory(plan__author=people["author"], plan__state="running")
    for state in (JobState.QUEUED, JobState.RUNNING):  # handed over to its continuation, or in a slice
        run = DrillRunFactory(drill=drill, state=state, replay_run=replay)
        assert (run.status, drills_list().get(pk=drill.pk).latest_status) == ("replaying", "replaying")
        DrillRun.objects.filter(pk=run.pk).update(state=JobState.SUCCEEDED, outcome=DrillOutcome.PASSED)
    assert drills_list().get(pk=drill.pk).latest_status == "passed"
