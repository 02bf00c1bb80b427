"""The scheduler's drill work (the ``drill_schedule`` job) and the drill side of the job watchdog.

Runs whose job was lost (a killed worker, a flushed queue) are the one job watchdog's
(recovery.jobs.watchdog, which runs on every scheduler tick): DrillRun's ``lost_policy`` retries
a queued run (first phase or continuation) and a replaying run whose continuation's worker died,
each enqueued again once (a conditional UPDATE, so two watchdogs enqueue it once), and retires a
first phase whose worker died (its steps cannot be redone safely: messages were injected) or a
run past its deadline with no job finishing it. A retired run (or one whose retries ran out) is
ended here, by DrillRun's ``job_retired`` hook: failed at its step, its replay aborted, with its
audit event, counters and alert (recovery.drills.outcome)."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from django.conf import settings

from recovery.drills.outcome import drill_run_close
from recovery.drills.services import drill_schedule_due
from recovery.errors import RecoveryError
from recovery.models import RUN_ACTIVE, DrillOutcome, DrillRun, DrillStep, JobState, ReplayRun


def drill_tick() -> None:
    """Schedule the due drills (lost runs: the job watchdog, see the module docstring)."""
    drill_schedule_due()


def _abort_replay(run: DrillRun, reason: str) -> None:
    from recovery.replay.services import run_abort

    replay = ReplayRun.objects.filter(pk=run.replay_run_id, state__in=RUN_ACTIVE).first()
    if replay is not None:
        with contextlib.suppress(RecoveryError):  # it ended meanwhile
            run_abort(actor="drill", run=replay, reason=f"drill run {run.pk}: {reason}"[:500])


def drill_run_retired(run: DrillRun) -> None:
    """End a run the job watchdog retired (``run`` as it was before: its phase, step and state
    say why). Called in the watchdog's transaction, after its row was marked failed with the job's
    error; a run that ended meanwhile is left as it is."""
    step = run.step or DrillStep.PROVISIONED
    if run.past_deadline(grace=timedelta(seconds=settings.RECOVERY_JOB_LOST_AFTER)):
        why, reason = "timed out", "timed out: no worker finished the run"
    elif run.state == JobState.RUNNING and run.replay_run_id is None:
        why, reason = "worker lost", f"the drill's worker stopped during step {step}"
    else:
        why = "job lost"
        reason = f"its job was lost again after {run.retries} retries: no worker finished the run"
    _abort_replay(run, why)
    drill_run_close(run, outcome=DrillOutcome.FAILED, failed_step=step, reason=reason)
