"""`make run` (seed_demo) defines a demo drill per local broker on a five-minute schedule,
defined by demo-operator and approved by demo-approver, so drill history appears within minutes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from recovery.drills.selectors import drill_approval_current
from recovery.models import Drill

pytestmark = pytest.mark.django_db


def test_seed_demo_defines_an_approved_demo_drill_per_broker(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("seed_demo", credentials_file=str(tmp_path / "creds"), stdout=out)
    drills = {d.name: d for d in Drill.objects.select_related("broker", "author")}
    assert set(drills) == {"demo-rabbitmq", "demo-kafka", "demo-sqs"}
    for drill in drills.values():
        assert drill.schedule == "*/5 * * * *" and drill.enabled and drill.next_run_at is not None
        assert drill.author.username == "demo-operator"
        approval = drill_approval_current(drill)
        assert approval is not None and approval.approver.username == "demo-approver"
    assert "Demo drills (every 5 minutes, approved)" in out.getvalue()
    call_command("seed_demo", credentials_file=str(tmp_path / "creds"), stdout=io.StringIO())
    assert Drill.objects.count() == 3 and all(d.approvals.count() == 1 for d in Drill.objects.all())
