"""A drill run under each job backend with a real worker process (RQ's rqworker, Celery's solo
worker): one worker process serves the drill run's jobs and its replay's jobs in turn, because
the drill run hands its worker back while the replay runs (recovery.drills.runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recovery.drills.services import drill_approve, drill_create, drill_run_now
from recovery.models import DrillOutcome, DrillRun
from tests.helpers import wait_until
from tests.namespace import unique
from tests.recovery.test_job_backends import CELERY_WORKER, RQ_WORKER, _process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("harness", ["rabbitmq"], indirect=True)
@pytest.mark.parametrize("backend", ["rq", "celery"])
def test_a_drill_passes_with_one_worker_process_of_each_backend(
    backend: str, settings: Any, harness: Any, people: dict[str, Any], default_rules: None, test_redis: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    settings.RECOVERY_JOB_BACKEND = backend
    drill = drill_create(
        actor=people["author"],
        data={"name": unique(f"backend-{backend}", 6), "broker": harness.broker,
              "schedule": "@daily", "timeout_seconds": 120},
    )  # fmt: skip
    drill_approve(actor=people["approver"], drill=drill)
    log = tmp_path / f"{backend}.log"
    with _process(RQ_WORKER if backend == "rq" else CELERY_WORKER, backend, log) as proc:
        run = drill_run_now(actor=people["author"], drill=drill)
        ended = wait_until(
            lambda: proc.poll() is not None
            or DrillRun.objects.get(pk=run.pk).outcome != "",  # ended: passed, failed or skipped
            timeout=120, interval=0.3,
        )  # fmt: skip
    run.refresh_from_db()
    assert ended and run.outcome == DrillOutcome.PASSED, (
        f"{run.status} {run.failed_step}: {run.reason} {run.error}\n" + (log.read_text()[-3000:])
    )
    assert (run.lost, run.recovered) == (0, 2)
