"""Migration 0016 moves drill runs onto the one job lifecycle: each old state becomes a job state
(and an ended run's outcome), the lease becomes a heartbeat or an enqueueing, progress is the
steps recorded; and back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("recovery", "0015_job_lifecycle")]
AFTER = [("recovery", "0016_drill_run_job_lifecycle")]


def _migrate(target: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return MigrationExecutor(connection).loader.project_state(target).apps


@pytest.fixture
def old_apps() -> Iterator[Any]:
    """The schema before 0016; the latest one again afterwards."""
    apps = _migrate(BEFORE)
    try:
        yield apps
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_0016_converts_every_drill_run_state_and_back(old_apps: Any) -> None:
    user = old_apps.get_model("auth", "User").objects.create(username=f"u-{uuid.uuid4().hex[:6]}")
    broker = old_apps.get_model("recovery", "Broker").objects.create(
        name=f"b-{uuid.uuid4().hex[:6]}", kind="rabbitmq", endpoint="amqp://x"
    )
    drill = old_apps.get_model("recovery", "Drill").objects.create(
        name="nightly", author=user, broker=broker, work_queue="drill-w", dead_letter_queue="drill-d",
        message_count=6, transient_count=2, poison_count=1, schedule="@daily",
    )  # fmt: skip
    plan = old_apps.get_model("recovery", "ReplayPlan").objects.create(name="p", author=user, state="running")
    replay = old_apps.get_model("recovery", "ReplayRun").objects.create(plan=plan, state="running", plan_hash="x")
    now = timezone.now()
    ago = now - timedelta(minutes=10)
    steps = [{"step": name, "ok": True} for name in ("provisioned", "injected", "dead_lettered")]
    made = {}
    for key, fields in {
        "queued": {"state": "queued"},
        "running": {"state": "running", "started_at": ago, "steps": steps, "lease_owner": "w",
                    "lease_until": now + timedelta(seconds=60)},
        "replaying_held": {"state": "replaying", "started_at": ago, "steps": steps, "replay_run": replay,
                           "lease_owner": "w", "lease_until": now + timedelta(seconds=90)},
        "replaying_handed_over": {"state": "replaying", "started_at": ago, "steps": steps, "replay_run": replay,
                                  "lease_owner": "", "lease_until": now - timedelta(seconds=5)},
        "passed": {"state": "passed", "started_at": ago, "finished_at": now, "steps": steps * 2},
        "failed": {"state": "failed", "started_at": ago, "finished_at": now, "failed_step": "injected",
                   "reason": "broker down"},
        "skipped": {"state": "skipped", "finished_at": now, "reason": "not run: not approved"},
    }.items():  # fmt: skip
        made[key] = old_apps.get_model("recovery", "DrillRun").objects.create(drill=drill, trigger="manual", **fields)

    new_apps = _migrate(AFTER)
    runs = {key: new_apps.get_model("recovery", "DrillRun").objects.get(pk=run.pk) for key, run in made.items()}
    assert {key: (run.state, run.outcome) for key, run in runs.items()} == {
        "queued": ("queued", ""), "running": ("running", ""), "replaying_held": ("running", ""),
        "replaying_handed_over": ("queued", ""), "passed": ("succeeded", "passed"), "failed": ("failed", "failed"),
        "skipped": ("cancelled", "skipped"),
    }  # fmt: skip
    assert runs["running"].heartbeat_at == made["running"].lease_until - timedelta(seconds=120)
    assert runs["replaying_handed_over"].enqueued_at == made["replaying_handed_over"].lease_until
    assert runs["queued"].enqueued_at == made["queued"].created_at
    assert (runs["running"].processed, runs["running"].total, runs["running"].deliveries) == (3, 8, 1)
    assert (runs["passed"].processed, runs["queued"].processed, runs["queued"].total) == (3, 0, None)
    assert (runs["failed"].reason, runs["failed"].error) == ("broker down", "")

    _migrate(BEFORE)
    back = {key: old_apps.get_model("recovery", "DrillRun").objects.get(pk=run.pk) for key, run in made.items()}
    assert {key: run.state for key, run in back.items()} == {
        "queued": "queued", "running": "running", "replaying_held": "replaying", "replaying_handed_over": "replaying",
        "passed": "passed", "failed": "failed", "skipped": "skipped",
    }  # fmt: skip
    assert back["replaying_handed_over"].lease_until == made["replaying_handed_over"].lease_until
    assert back["running"].lease_until == made["running"].lease_until and back["running"].lease_owner
