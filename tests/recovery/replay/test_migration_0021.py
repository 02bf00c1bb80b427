"""Migration 0021 (issue 15): runs that ended "verified" with no verification step were never
verified, so they become "completed, not verified" (with a run event saying why); runs verified
by a step keep their state; and back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BEFORE = [("recovery", "0020_letter_lifecycle")]
AFTER = [("recovery", "0021_replay_evidence_breaker_resent")]


def _migrate(target: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return MigrationExecutor(connection).loader.project_state(target).apps


@pytest.fixture
def old_apps() -> Iterator[Any]:
    """The schema before 0021; the latest one again afterwards."""
    apps = _migrate(BEFORE)
    try:
        yield apps
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_0021_relabels_runs_verified_without_a_step_and_back(old_apps: Any) -> None:
    user = old_apps.get_model("auth", "User").objects.create(username=f"u-{uuid.uuid4().hex[:6]}")
    plan = old_apps.get_model("recovery", "ReplayPlan").objects.create(name="p", author=user, state="finished")
    runs = old_apps.get_model("recovery", "ReplayRun")
    stepped = [{"step": "no_redeadletter_within", "ok": True, "reason": "none came back", "details": {}}]
    unverified = runs.objects.create(plan=plan, state="verified", plan_hash="x", verification=[])
    verified = runs.objects.create(plan=plan, state="verified", plan_hash="x", verification=stepped)
    failed = runs.objects.create(plan=plan, state="failed", plan_hash="x", verification=[])

    new_apps = _migrate(AFTER)
    states = dict(new_apps.get_model("recovery", "ReplayRun").objects.values_list("pk", "state"))
    assert states == {unverified.pk: "completed_not_verified", verified.pk: "verified", failed.pk: "failed"}
    events = new_apps.get_model("recovery", "RunEvent").objects.filter(kind="relabelled")
    assert list(events.values_list("run_id", flat=True)) == [unverified.pk]
    assert "no verification step ran" in events.get().message

    back_apps = _migrate(BEFORE)
    states = dict(back_apps.get_model("recovery", "ReplayRun").objects.values_list("pk", "state"))
    assert states == {unverified.pk: "verified", verified.pk: "verified", failed.pk: "failed"}
    assert not back_apps.get_model("recovery", "RunEvent").objects.filter(kind="relabelled").exists()
