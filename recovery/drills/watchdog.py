"""The scheduler's drill work (the ``drill_schedule`` job): schedule due drills, and take care of
runs whose job was lost (a killed worker, a flushed queue). A queued run or a handed-over
replaying run nobody picked up is enqueued again, claimed with a conditional UPDATE so two
schedulers enqueue it once; a run whose first-phase worker died (its steps cannot be redone
safely: messages were injected) or that is past its deadline with no job finishing it fails,
its replay aborted."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from recovery.drills.outcome import drill_run_close
from recovery.drills.runner import LEASE_SECONDS, LOST_AFTER_SECONDS
from recovery.drills.services import drill_schedule_due
from recovery.errors import RecoveryError
from recovery.jobs.queue import enqueue
from recovery.models import DRILL_RUN_ACTIVE, RUN_ACTIVE, DrillRun, DrillRunState, DrillStep


def drill_tick() -> None:
    drill_schedule_due()
    drill_runs_recover()


def _abort_replay(run: DrillRun, reason: str) -> None:
    from recovery.replay.services import run_abort

    if run.replay_run_id and run.replay_run.state in RUN_ACTIVE:
        with contextlib.suppress(RecoveryError):  # it ended meanwhile
            run_abort(actor="drill", run=run.replay_run, reason=f"drill run {run.pk}: {reason}"[:500])


def _re_enqueue(run: DrillRun) -> bool:

    with transaction.atomic():
        claimed = DrillRun.objects.filter(pk=run.pk, state=run.state, lease_until=run.lease_until).update(
            lease_until=timezone.now()
        )
        if claimed:
            enqueue("drill_run", run.pk)
    return bool(claimed)


def drill_runs_recover() -> list[tuple[int, str]]:
    """Returns (run id, what was done) for each run it acted on."""
    now = timezone.now()
    lost_before = now - timedelta(seconds=LOST_AFTER_SECONDS)
    acted: list[tuple[int, str]] = []
    for run in DrillRun.objects.filter(state__in=DRILL_RUN_ACTIVE).select_related("drill", "replay_run"):
        if run.lease_owner and run.lease_until and run.lease_until > now:
            continue  # a job holds it
        started = run.deadline_at or run.created_at + timedelta(seconds=run.drill.timeout_seconds)
        if now > started + timedelta(seconds=LOST_AFTER_SECONDS):
            _abort_replay(run, "timed out")
            if drill_run_close(run, state=DrillRunState.FAILED, failed_step=run.step or DrillStep.PROVISIONED,
                               reason="timed out: no worker finished the run"):  # fmt: skip
                acted.append((run.pk, "failed: timed out"))
        elif (
            run.state == DrillRunState.RUNNING
            and run.lease_until
            and run.lease_until < now - timedelta(seconds=LEASE_SECONDS)
        ):
            _abort_replay(run, "worker lost")
            why = f"the drill's worker stopped during step {run.step or DrillStep.PROVISIONED}"
            if drill_run_close(run, state=DrillRunState.FAILED, failed_step=run.step or DrillStep.PROVISIONED,
                               reason=why):  # fmt: skip
                acted.append((run.pk, "failed: worker lost"))
        elif (run.lease_until or run.created_at) < lost_before and _re_enqueue(run):
            acted.append((run.pk, "enqueued again"))
    return acted
