"""Runs a drill run: the ``drill_run`` job, delivered again after its replay has started.

The run row is the job's row in the one lifecycle (recovery.models.jobs, recovery.jobs.lifecycle).
A job claims it (``job_claim``: queued -> running, a conditional UPDATE) so two deliveries never
work on it at once, and keeps its heartbeat while it works; the claim's ``deliveries`` count is
its fencing token, so a job whose run was claimed again (the job watchdog re-enqueued it) or
ended meanwhile stops at its next heartbeat without recording anything. The first job does the
steps up to the start of the replay (recovery.drills.steps), then hands the worker back (running
-> queued, the continuation enqueued in the same transaction): the replay's own workers run in
the job workers like any replay, and a continuation job of the drill run claims it again and
consumes the replayed copies while it waits, a slice at a time, so that even a single worker
process serves both. ``replay_run`` tells the phases apart. Once the replay ends it verifies,
cleans up and ends the run (recovery.drills.outcome). A run past its timeout fails at the step it
was in, aborting its replay. Runs whose job was lost are the job watchdog's
(recovery.jobs.watchdog, with DrillRun's ``lost_policy`` and ``job_retired``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from recovery.brokers.registry import adapter_for
from recovery.drills import scenario, steps
from recovery.drills.consumer import DrillConsumer
from recovery.drills.errors import StepFailed
from recovery.drills.outcome import drill_run_close
from recovery.drills.verify import Accounting, account, expectations
from recovery.errors import BrokerError, RecoveryError
from recovery.jobs.lifecycle import job_claim
from recovery.jobs.queue import enqueue
from recovery.models import (
    RUN_ACTIVE,
    Drill,
    DrillOutcome,
    DrillRun,
    DrillRunState,
    DrillStep,
    JobState,
    PlanState,
    ReplayPlan,
    ReplayRun,
    RunState,
)
from recovery.observability import drills as telemetry

log = logging.getLogger("recovery.drills")

SLICE_SECONDS = 10  # a continuation job gives its worker back after this long while the replay runs
VERIFY_WINDOW_SECONDS = 10  # how long the consumer may take to process the replayed copies


class ClaimLost(Exception):
    """The run is no longer this job's (claimed again by another delivery, or ended by the job
    watchdog): stop without recording anything."""


class DrillRunJob:
    """One job's work on one drill run: its claim, its broker adapter and consumer, its steps."""

    def __init__(self, run: DrillRun) -> None:
        self.run = run
        self.drill: Drill = run.drill
        self.delivery = run.deliveries  # the claim's fencing token (job_claim counted it)
        self.adapter: Any = None
        self.consumer: DrillConsumer | None = None
        self.behaviours = scenario.behaviours(
            run.pk, total=self.drill.message_count, transient=self.drill.transient_count,
            poison=self.drill.poison_count,
        )  # fmt: skip

    # -- claim, saving, time -------------------------------------------------------------------

    def save(self, *fields: str) -> None:
        DrillRun.objects.filter(pk=self.run.pk).update(**{name: getattr(self.run, name) for name in fields})

    def mine(self) -> Any:
        """The run's row while this job's claim holds: running, and claimed by no one since."""
        return DrillRun.objects.filter(pk=self.run.pk, state=JobState.RUNNING, deliveries=self.delivery)

    def renew(self, *, deadline: bool = True) -> None:
        """The heartbeat (the job watchdog's sign of life), fenced by the claim: ClaimLost when
        the run is no longer this job's. Fails the run's current step once it is past its deadline.
        (lifecycle.job_beat does not say whether it matched, nor check the claim.)"""
        if not self.mine().update(heartbeat_at=timezone.now()):
            raise ClaimLost
        if deadline and self.run.deadline_at and timezone.now() > self.run.deadline_at:
            raise StepFailed(self.run.step or DrillStep.PROVISIONED,
                             f"timed out: the run took longer than {self.drill.timeout_seconds} s")  # fmt: skip

    def seconds_since(self, key: str) -> float:
        return (timezone.now() - datetime.fromisoformat(self.run.observations[key])).total_seconds()

    def reload_drill(self) -> None:
        self.drill = Drill.objects.select_related("broker", "dlq", "author").get(pk=self.drill.pk)
        self.consumer = None

    # -- broker --------------------------------------------------------------------------------

    def open(self) -> None:
        self.adapter = adapter_for(self.drill.broker, timeout=10)

    def close(self) -> None:
        if self.adapter is not None:
            try:
                self.adapter.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's outcome
                log.exception("closing the drill's adapter failed")

    def poll(self, wait_seconds: float = 1.0) -> int:
        """One poll of the drill's consumer; broker trouble waits a second and is retried until
        the deadline (the step then fails with the timeout)."""
        if self.consumer is None:
            self.consumer = DrillConsumer(self.adapter, self.drill, self.run.pk, self.run.observations)
        try:
            received = self.consumer.poll(wait_seconds=wait_seconds)
        except BrokerError as exc:
            log.warning("drill %s run %s: consumer: %s", self.drill.name, self.run.pk, exc)
            self.run.observations["last_broker_error"] = str(exc)[:500]
            time.sleep(1)
            received = 0
        self.save("observations")
        return received

    def drain_work_queue(self, *, seconds: float = 5.0) -> None:
        """Poll until the work queue stays quiet (another run's leftovers go, this run's are handled);
        also after the deadline (clean-up of a run that timed out)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.poll(wait_seconds=0.5):
            self.renew(deadline=False)

    # -- steps ---------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Record a step: its start, duration and outcome (a StepFailed inside fails it)."""
        self.run.step = name
        self.save("step")
        if name != DrillStep.CLEANED_UP:
            self.renew()
        started, clock, detail = timezone.now(), time.monotonic(), {}
        try:
            with telemetry.drill_step(name, run=self.run.pk):
                yield detail
        except StepFailed as exc:
            self.record(name, started, time.monotonic() - clock, ok=False, detail={**detail, "reason": exc.reason})
            raise
        except (RecoveryError, BrokerError) as exc:
            self.record(name, started, time.monotonic() - clock, ok=False, detail={**detail, "reason": str(exc)})
            raise StepFailed(name, str(exc)) from exc
        ok = detail.pop("ok", True)
        self.record(name, started, time.monotonic() - clock, ok=ok, detail=detail)

    def record(self, name: str, started: datetime, seconds: float, *, ok: bool, detail: dict[str, Any]) -> None:
        entry = {"step": name, "started_at": started.isoformat(), "seconds": round(seconds, 3), "ok": ok,
                 "detail": {k: v for k, v in detail.items() if k != "behaviours"}}  # fmt: skip
        self.run.steps = [*self.run.steps, entry]
        self.run.processed = len({e.get("step") for e in self.run.steps if isinstance(e, dict)})
        self.save("steps", "processed")

    # -- the two phases ------------------------------------------------------------------------

    def first_phase(self) -> None:
        """Steps up to the replay's start, then hand over to a continuation job."""
        self.run.deadline_at = timezone.now() + timedelta(seconds=self.drill.timeout_seconds)
        self.run.total, self.run.processed = len(DrillStep), 0
        self.save("deadline_at", "total", "processed")
        with self.step(DrillStep.PROVISIONED) as detail:
            steps.provision(self, detail)
        for name, func in ((DrillStep.INJECTED, steps.inject), (DrillStep.DEAD_LETTERED, steps.consume_failures),
                           (DrillStep.CAPTURED, steps.capture), (DrillStep.CLASSIFIED, steps.classify)):  # fmt: skip
            with self.step(name) as detail:
                func(self, detail)
        self.run.step = DrillStep.REPLAYED
        self.run.observations["replay_started_at"] = timezone.now().isoformat()
        self.save("step", "observations")
        try:
            replay_run = steps.start_replay(self)
        except (RecoveryError, StepFailed) as exc:
            reason = exc.reason if isinstance(exc, StepFailed) else str(exc)
            started = datetime.fromisoformat(self.run.observations["replay_started_at"])
            self.record(DrillStep.REPLAYED, started, self.seconds_since("replay_started_at"), ok=False,
                        detail={"reason": reason})  # fmt: skip
            raise StepFailed(DrillStep.REPLAYED, reason) from exc
        self.run.replay_run = replay_run  # the second phase from now on
        self.save("replay_run")
        self.hand_over()

    def hand_over(self) -> None:
        """Give the run back (running -> queued) and enqueue the continuation, in one transaction;
        ``enqueued_at`` tells the job watchdog when a lost continuation is due again."""
        now = timezone.now()
        with transaction.atomic():
            if not self.mine().update(
                state=JobState.QUEUED, enqueued_at=now, heartbeat_at=now, observations=self.run.observations
            ):
                raise ClaimLost
            enqueue("drill_run", self.run.pk)

    def second_phase(self) -> None:
        """Consume while the replay runs (a slice per job), then verify, clean up and conclude."""
        replay = ReplayRun.objects.get(pk=self.run.replay_run_id)
        end = time.monotonic() + SLICE_SECONDS
        while replay.state in RUN_ACTIVE:
            if replay.state == RunState.PAUSED:
                self.abort_replay(f"paused: {replay.stop_reason}")
                replay.refresh_from_db()
                break
            if time.monotonic() > end:
                self.hand_over()
                return
            self.poll()
            self.renew()
            replay.refresh_from_db()
        started = datetime.fromisoformat(self.run.observations["replay_started_at"])
        ok = replay.state in (RunState.VERIFIED, RunState.COMPLETED_NOT_VERIFIED)  # issue 15
        self.record(DrillStep.REPLAYED, started, self.seconds_since("replay_started_at"), ok=ok,
                    detail={"replay_run": replay.pk, "state": replay.state, "published": replay.published,
                            "reason": "" if ok else replay.stop_reason or replay.get_state_display()})  # fmt: skip
        accounting = self.verify()
        with self.step(DrillStep.CLEANED_UP) as detail:
            self.clean_up(detail)
        self.conclude(accounting)

    def verify(self) -> Accounting:
        with self.step(DrillStep.VERIFIED) as detail:
            transient = [seq for seq, b in enumerate(self.behaviours) if b == scenario.TRANSIENT]
            end = time.monotonic() + VERIFY_WINDOW_SECONDS
            while not self._recovered(transient) and time.monotonic() < end:
                self.poll()
                self.renew()
            if self._recovered(transient):
                recovered_at = timezone.now()
                self.run.time_to_recover_seconds = round(self.seconds_since("dead_lettered_at"), 3)
                self.run.observations["recovered_at"] = recovered_at.isoformat()
            steps.capture_once(self)  # replayed copies that failed again are letters now
            originals, returned = steps.run_letters(self)
            accounting = account(self.behaviours, self.run.observations, originals, returned)
            self.run.recovered = len(accounting.recovered)
            self.run.lost = len(accounting.lost)
            self.run.duplicates = accounting.duplicates
            self.run.unexplained_duplicates = accounting.unexplained_duplicates
            self.save("time_to_recover_seconds", "observations", "recovered", "lost", "duplicates",
                      "unexplained_duplicates")  # fmt: skip
            ok = not (accounting.lost or accounting.unrecovered or accounting.unexplained_duplicates
                      or accounting.ok_unprocessed or accounting.poison_processed)  # fmt: skip
            detail.update(ok=ok, summary=accounting.summary(), **({} if ok else {"reason": accounting.summary()}))
        return accounting

    def _recovered(self, transient: list[int]) -> bool:
        processed = self.run.observations.get("processed", {})
        return all(any(processed.get(str(seq), [])) for seq in transient)

    def clean_up(self, detail: dict[str, Any]) -> None:
        """Drain what is left of this run on the work queue and the DLQ, and discard the run's
        letters (synthetic: kept as evidence, never replayed). The queue pair stays."""
        from recovery.triage.filters import LetterFilter
        from recovery.triage.services import letters_triage

        if self.drill.dlq_id is None:
            return
        if self.adapter is not None:
            self.drain_work_queue(seconds=3)
            steps.capture_once(self)
        originals, _returned = steps.run_letters(self)
        ids = list(
            self.drill.dlq.letters.filter(id__gt=self.run.letter_baseline).exclude(state="discarded")
            .values_list("id", "headers")
        )  # fmt: skip
        mine = tuple(pk for pk, headers in ids if scenario.identify(headers)[0] == self.run.pk)
        if mine:
            why = f"drill {self.drill.name} run {self.run.pk}: synthetic letters, kept as evidence"
            letters_triage(actor="drill", selection=LetterFilter(ids=mine), kind="discard", reason=why)
        detail.update(discarded=len(mine), letters=len(originals))

    def abort_replay(self, reason: str) -> None:
        from recovery.replay.services import run_abort

        if self.run.replay_run_id is None:
            return
        replay = ReplayRun.objects.get(pk=self.run.replay_run_id)
        if replay.state in RUN_ACTIVE:
            try:
                run_abort(actor="drill", run=replay, reason=f"drill run {self.run.pk}: {reason}"[:500])
            except RecoveryError:
                log.warning("drill run %s: its replay run %s could not be aborted", self.run.pk, replay.pk)

    def conclude(self, accounting: Accounting | None, failure: StepFailed | None = None, error: str = "") -> None:
        """Expectations, then the run's end: passed only when every step and expectation passed.
        ``error``: the job's own trouble (an unexpected exception), recorded as the job's error."""
        self.run.refresh_from_db()
        self.run.expectations = expectations(self.run, accounting)
        self.save("expectations")
        failed_steps = [s["step"] for s in self.run.steps if not s["ok"]]
        unmet = [e for e in self.run.expectations if not e["ok"]]
        if failure is None and not failed_steps and not unmet:
            drill_run_close(self.run, outcome=DrillOutcome.PASSED, reason=accounting.summary() if accounting else "")
            return
        step = failure.step if failure else failed_steps[0] if failed_steps else unmet[0]["step"]
        reasons = [failure.reason] if failure else []
        reasons += [s["detail"].get("reason", "") for s in self.run.steps if not s["ok"]]
        reasons += [f"{e['name']}: expected {e['expected']}, got {e['actual']}" for e in unmet]
        drill_run_close(self.run, outcome=DrillOutcome.FAILED, failed_step=step, error=error,
                        reason="; ".join(dict.fromkeys(r for r in reasons if r)))  # fmt: skip


def drill_run_execute(*, drill_run_id: int) -> str:
    """The ``drill_run`` job: claim the run (queued -> running), do what its phase calls for,
    record the outcome. Returns what happened (its status, for logs and tests)."""
    if not job_claim(DrillRun, drill_run_id):
        return "not claimed"
    run = DrillRun.objects.select_related("drill__broker", "drill__dlq", "drill__author").get(pk=drill_run_id)
    job = DrillRunJob(run)
    # the span's phase keeps its values: "queued" for the first phase, "replaying" for a continuation
    phase = DrillRunState.QUEUED if run.replay_run_id is None else DrillRunState.REPLAYING
    try:
        with telemetry.drill_run(name=run.drill.name, drill_id=run.drill_id, run=run.pk, phase=phase):
            job.open()
            if run.replay_run_id is None:
                job.first_phase()
            else:
                job.second_phase()
        return job.run.status
    except ClaimLost:
        return "claim lost"
    except StepFailed as failure:
        _fail(job, failure)
        return DrillRunState.FAILED
    except Exception as exc:
        log.exception("drill run %s failed unexpectedly", drill_run_id)
        error = f"{type(exc).__name__}: {exc}"
        _fail(job, StepFailed(job.run.step or DrillStep.PROVISIONED, f"internal error: {error}"), error=error)
        return DrillRunState.FAILED
    finally:
        job.close()


def _fail(job: DrillRunJob, failure: StepFailed, error: str = "") -> None:
    """A step failed: abort the replay if one runs (or cancel its plan if it never started, so
    its letters are not held in a plan), clean up what can be, end the run failed."""
    job.abort_replay(failure.reason)
    _cancel_plan(job, failure.reason)
    try:
        with job.step(DrillStep.CLEANED_UP) as detail:
            job.clean_up(detail)
    except (StepFailed, ClaimLost):
        log.warning("drill run %s: clean-up after a failure did not finish", job.run.pk)
    job.conclude(None, failure, error=error)


def _cancel_plan(job: DrillRunJob, reason: str) -> None:
    from recovery.replay.services import plan_cancel

    plan = ReplayPlan.objects.filter(pk=job.run.plan_id, state__in=(PlanState.DRAFT, PlanState.SUBMITTED,
                                                                  PlanState.APPROVED)).first()  # fmt: skip
    if plan is not None:
        try:
            plan_cancel(actor="drill", plan=plan, reason=f"drill run {job.run.pk} failed: {reason}"[:500])
        except RecoveryError:
            log.warning("drill run %s: its plan %s could not be cancelled", job.run.pk, plan.pk)
