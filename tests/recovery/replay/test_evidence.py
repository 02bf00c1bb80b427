"""Verification with evidence, the circuit breaker and the re-sent counter (issue 15, parts 3 and
8), against the real brokers.

A run is verified, and its ledger rows become verified, only after a capture pass of its DLQ that
started after the verification window found nothing back, and the broker's positive signal: Kafka,
the consumer group committed past each replayed offset; SQS and RabbitMQ, the target's depth is
back to its depth at the start. Without it the run ends "completed, not verified".

``Service`` stands in for the world around a run while the engine verifies it in the test's
thread: the target's consumer (optional) and the scheduler's capture job, which performs the
capture passes the verification step requests."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from recovery.brokers.base import DlqAddress
from recovery.brokers.registry import adapter_for
from recovery.capture.services import capture_pass_run
from recovery.models import (
    AttemptState,
    AuditAction,
    AuditEvent,
    BrokerKind,
    CapturePass,
    DeadLetter,
    DeadLetterState,
    JobState,
    LedgerEntry,
    ReplayRun,
    RunEvent,
    RunState,
)
from recovery.permissions import Role
from recovery.replay import breaker, services
from recovery.replay.checks import CheckKind, validate_config
from recovery.replay.defaults import DEFAULT_STOP_CONDITIONS, DEFAULT_VERIFICATIONS
from recovery.replay.engine import Worker
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.namespace import unique
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LETTERS = 6


class Service(threading.Thread):
    """The target's consumer (when ``consume``) and the scheduler's capture job, in a thread of its
    own until stopped. ``passes`` notes (pass id, the run's state when the pass was performed)."""

    def __init__(
        self, harness: Any, dlq: Any, run: ReplayRun, target_address: DlqAddress | None, *, bounce: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.harness, self.dlq, self.run_id, self.address = harness, dlq, run.pk, target_address
        self.bounce = bounce  # the consumer fails every message: it goes back to the DLQ, replay id and all
        self.stopping = threading.Event()
        self.passes: list[tuple[int, str]] = []
        self.consumed = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        adapter = adapter_for(self.harness.broker, timeout=10) if self.address else None
        try:
            while not self.stopping.is_set():
                if adapter is not None:
                    batch = adapter.receive(self.address, max_messages=50, wait_seconds=0.5)
                    if self.bounce and batch:
                        back = [(m.body, {"x-replay-id": str(m.headers["x-replay-id"])}) for m in batch]
                        self.harness.fill(self.dlq, back)
                    adapter.remove(self.address, batch)
                    self.consumed += len(batch)
                for pk in CapturePass.objects.filter(dlq=self.dlq, state=JobState.QUEUED).values_list("pk", flat=True):
                    state = ReplayRun.objects.filter(pk=self.run_id).values_list("state", flat=True).get()
                    capture_pass_run(pass_id=pk)
                    self.passes.append((pk, state))
                time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            if adapter is not None:
                adapter.close()
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
        assert not self.errors, self.errors


def _verifications(**params: Any) -> list[dict[str, Any]]:
    return [{"step": "letters_resolved", "seconds": 1, "settle_s": 60, **params}]


def _consumer(harness: Any, target: Any, group: str) -> DlqAddress:
    """Where the target's consumer reads: the queue, or the topic as consumer group ``group``."""
    address = harness.target_address(target)
    return DlqAddress(name=address.name, group=group) if harness.kind == BrokerKind.KAFKA else address


# -- defaults -----------------------------------------------------------------------------------


def test_new_plans_get_the_default_stop_conditions_and_verification(make_user, chk_dlq) -> None:
    author = make_user(Role.OPERATOR)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(chk_dlq.pk,)), name="new")

    assert plan.stop_conditions == DEFAULT_STOP_CONDITIONS
    assert [c["condition"] for c in plan.stop_conditions] == ["redeadletter_rate", "publish_error_rate"]
    assert plan.verifications == DEFAULT_VERIFICATIONS == [{"step": "letters_resolved", "seconds": 60, "settle_s": 300}]
    # they are valid as they stand: the plan can be changed and submitted with them
    assert validate_config(CheckKind.STOP_CONDITIONS, plan.stop_conditions)
    assert validate_config(CheckKind.VERIFICATIONS, plan.verifications)[0]["group"] == ""
    plan = services.plan_update(actor=author, plan=plan, changes={"rate_per_second": 20})
    assert plan.verifications == DEFAULT_VERIFICATIONS


# -- verified only with evidence, per broker ----------------------------------------------------


def test_a_replay_is_verified_only_after_a_later_capture_pass_and_the_positive_signal(
    harness, make_user, test_redis
) -> None:
    dlq, letters = captured_letters(harness, LETTERS)
    target = harness.target()
    group = unique("consumer")
    params = {"group": group} if harness.kind == BrokerKind.KAFKA else {}
    plan, _ = approved_plan(harness, dlq, target, make_user, verifications=_verifications(**params))
    run = start(plan, make_user)
    passes_before = set(CapturePass.objects.filter(dlq=dlq).values_list("pk", flat=True))
    service = Service(harness, dlq, run, _consumer(harness, target, group))
    service.start()
    try:
        outcome = Worker(run.pk, 0).run()
    finally:
        service.stop()

    run.refresh_from_db()
    assert outcome == RunState.VERIFIED, run.verification
    assert run.state == RunState.VERIFIED and run.published == LETTERS
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.VERIFIED}
    # the capture pass the step asked for ran while the run was still verifying, after the window
    requested = [(pk, state) for pk, state in service.passes if pk not in passes_before]
    assert requested and requested[0][1] == RunState.VERIFYING, service.passes
    [step] = run.verification
    details = step["details"]
    assert (step["step"], step["ok"]) == ("letters_resolved", True)
    [evidence_pass] = details["capture_passes"]
    assert evidence_pass["pass"] == requested[0][0]
    assert evidence_pass["started_at"] >= details["window_ends_at"]
    [signal] = details["signals"]
    assert signal["ok"] and signal["letters"] == LETTERS
    if harness.kind == BrokerKind.KAFKA:
        replayed = int(signal["replayed_up_to"]["0"])
        assert signal["group"] == group and int(signal["committed"]["0"]) > replayed
    else:
        assert (signal["baseline"], signal["depth"]) == (0, 0)
    assert service.consumed >= LETTERS
    # the letter lifecycle follows the evidence: replayed -> resolved, counted in the run's event
    states = set(DeadLetter.objects.filter(pk__in=[x.pk for x in letters]).values_list("state", flat=True))
    assert states == {DeadLetterState.RESOLVED}
    event = AuditEvent.objects.get(action=AuditAction.RUN_FINISHED, object_id=str(run.pk))
    assert event.after["letters_resolved"] == LETTERS


def test_a_replay_into_a_target_no_consumer_reads_ends_completed_not_verified(rabbit, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(rabbit, LETTERS)
    target = rabbit.target()
    plan, _ = approved_plan(rabbit, dlq, target, make_user, verifications=_verifications(settle_s=10))
    run = start(plan, make_user)
    service = Service(rabbit, dlq, run, None)  # the capture job only: nobody reads the target
    service.start()
    try:
        outcome = Worker(run.pk, 0).run()
    finally:
        service.stop()

    run.refresh_from_db()
    assert outcome == run.state == RunState.COMPLETED_NOT_VERIFIED
    assert run.get_state_display() == "Completed, not verified"
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.PUBLISHED}
    [step] = run.verification
    assert step["ok"] is False and step["details"]["inconclusive"] is True
    assert step["reason"].startswith("could not gather the evidence")
    [signal] = step["details"]["signals"]
    assert (signal["ok"], signal["baseline"], signal["depth"]) == (False, 0, LETTERS)
    assert run.baseline and next(iter(run.baseline.values()))["depth"] == 0


def test_letters_that_come_back_fail_the_verification_and_their_rows_are_marked(rabbit, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(rabbit, LETTERS)
    target = rabbit.target()
    plan, _ = approved_plan(rabbit, dlq, target, make_user, verifications=_verifications())
    run = start(plan, make_user)
    service = Service(rabbit, dlq, run, rabbit.target_address(target), bounce=True)
    service.start()
    try:
        outcome = Worker(run.pk, 0).run()
    finally:
        service.stop()

    run.refresh_from_db()
    assert outcome == run.state == RunState.VERIFICATION_FAILED
    assert run.redeadlettered == LETTERS
    rows = set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True))
    assert rows == {AttemptState.REDEADLETTERED}
    [step] = run.verification
    assert step["ok"] is False and "inconclusive" not in step["details"]
    assert step["reason"].startswith(f"{LETTERS} replayed letters came back to a DLQ")


def test_a_plan_without_verification_ends_completed_not_verified(rabbit, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(rabbit, LETTERS)
    plan, _ = approved_plan(rabbit, dlq, rabbit.target(), make_user, verifications=[])
    run = start(plan, make_user)

    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED
    run.refresh_from_db()
    assert (run.state, run.published, run.verification) == (RunState.COMPLETED_NOT_VERIFIED, LETTERS, [])
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.PUBLISHED}
    finished = RunEvent.objects.get(run=run, kind="finished")
    assert finished.message == "completed_not_verified: no verification step configured"


def test_steps_that_pass_without_evidence_per_letter_do_not_verify_a_run(rabbit, make_user, test_redis) -> None:
    dlq, _letters = captured_letters(rabbit, LETTERS)
    steps = [{"step": "no_redeadletter_within", "seconds": 1}]
    plan, _ = approved_plan(rabbit, dlq, rabbit.target(), make_user, verifications=steps)
    run = start(plan, make_user)

    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED
    run.refresh_from_db()
    assert run.verification[0]["ok"] is True
    assert "none gathered evidence per letter" in RunEvent.objects.get(run=run, kind="finished").message


# -- the circuit breaker --------------------------------------------------------------------------


def _tripped_run(rabbit: Any, make_user: Any, chk_http: Any, letters: int = 20) -> ReplayRun:
    """A run whose health stop condition paused it after its first batch; its plan's breaker has a
    cool-down of 30 s and probes of one batch (2 letters)."""
    dlq, _ = captured_letters(rabbit, letters)
    conditions = [{"condition": "health_check_failing", "url": chk_http.url("/health")}]
    plan, _ = approved_plan(rabbit, dlq, rabbit.target(), make_user, batch_size=2, stop_conditions=conditions,
                            breaker_cooldown_seconds=30, breaker_probe_size=2, canary_window_seconds=0)  # fmt: skip
    run = start(plan, make_user)
    chk_http.set_health(500)
    assert Worker(run.pk, 0).run() == "pause"
    run.refresh_from_db()
    assert run.state == RunState.PAUSED and run.breaker["state"] == breaker.OPEN
    return run


def test_the_circuit_breaker_probes_after_the_cool_down_and_resumes_when_the_probe_passes(
    rabbit, make_user, chk_http, test_redis
) -> None:
    run = _tripped_run(rabbit, make_user, chk_http)
    before = run.published
    assert breaker.tick(now=timezone.now() + timedelta(seconds=20)) == [], "still cooling down"
    chk_http.set_health(200)  # the dependency recovered

    assert breaker.tick(now=timezone.now() + timedelta(seconds=31)) == [run.pk]
    run.refresh_from_db()
    assert (run.state, run.phase, run.breaker["state"]) == (RunState.RUNNING, breaker.PROBE_PHASE, breaker.HALF_OPEN)
    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED

    run.refresh_from_db()
    assert before < 20 and run.published == 20
    [probe] = run.breaker["probes"]
    assert probe["passed"] is True and run.breaker["state"] == breaker.CLOSED
    kinds = list(RunEvent.objects.filter(run=run, kind=breaker.EVENT).values_list("message", flat=True))
    assert kinds == ["cool-down over: probing with 2 letter(s)", "probe passed: resuming at the canary rate"]


def test_the_circuit_breaker_stays_paused_when_the_probe_fails(rabbit, make_user, chk_http, test_redis) -> None:
    run = _tripped_run(rabbit, make_user, chk_http)
    before = run.published

    assert breaker.tick(now=timezone.now() + timedelta(seconds=31)) == [run.pk]
    assert Worker(run.pk, 0).run() == "pause"  # the dependency is still failing

    run.refresh_from_db()
    assert run.state == RunState.PAUSED and run.published == before + 2, "one probe of 2 letters, no more"
    assert run.breaker["state"] == breaker.OPEN
    [probe] = run.breaker["probes"]
    assert probe["passed"] is False and "health_check_failing" in probe["reason"]
    assert datetime.fromisoformat(run.breaker["retry_at"]) > timezone.now() + timedelta(seconds=25)

    operator = make_user(Role.OPERATOR, username=unique("olga"))
    services.run_resume(actor=operator, run=run, reason="the dependency is fixed")  # a person decides
    run.refresh_from_db()
    assert (run.breaker["state"], run.breaker["closed_by"]) == (breaker.CLOSED, operator.username)
    assert breaker.tick(now=timezone.now() + timedelta(hours=1)) == [], "no probe of a run an operator resumed"


def test_the_run_page_shows_the_probes(rabbit, make_user, chk_http, test_redis, client_for) -> None:
    run = _tripped_run(rabbit, make_user, chk_http, letters=8)
    breaker.tick(now=timezone.now() + timedelta(seconds=31))
    Worker(run.pk, 0).run()

    page = client_for(Role.VIEWER).get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="breaker-state" data-state="open"' in page
    assert 'data-passed="false"' in page and "health_check_failing" in page


# -- re-sent after a worker loss (part 8's counters) ----------------------------------------------


def test_rows_a_lost_worker_held_are_counted_as_re_sent_next_to_published(
    rabbit, make_user, test_redis, client_for
) -> None:
    dlq, _letters = captured_letters(rabbit, 10)
    plan, _ = approved_plan(rabbit, dlq, rabbit.target(), make_user, verifications=[])
    run = start(plan, make_user)
    lost = Worker(run.pk, 0)
    held = lost._claim(ReplayRun.objects.select_related("plan").get(pk=run.pk), 4)  # then the worker is lost
    assert len(held) == 4
    LedgerEntry.objects.filter(pk__in=[c.ledger_id for c in held]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)  # its lease ran out
    )

    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED  # another worker 0, another owner
    run.refresh_from_db()
    assert (run.published, run.failed, run.resent) == (10, 0, 4)
    assert set(LedgerEntry.objects.filter(run=run, resent=True).values_list("pk", flat=True)) == {
        c.ledger_id for c in held
    }
    page = client_for(Role.VIEWER).get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="run-resent"' in page and ">4</span> re-sent after a worker loss" in page


# -- what verification waits for, on the run page --------------------------------------------------


def test_while_verifying_the_run_page_says_what_each_step_waits_for_and_until_when(
    rabbit, make_user, test_redis, client_for
) -> None:
    """A run in its verification window read only "running the verification steps" for minutes:
    the page now shows each step waiting, with its reason and deadline, and drops that progress
    once the run is no longer verifying."""
    dlq, _letters = captured_letters(rabbit, 3)
    steps = [{"step": "letters_resolved", "seconds": 60, "settle_s": 60}]
    plan, author = approved_plan(rabbit, dlq, rabbit.target(), make_user, verifications=steps)
    run = start(plan, make_user)
    outcome: list[str] = []

    def work() -> None:
        try:
            outcome.append(Worker(run.pk, 0).run())
        finally:
            connection.close()  # the thread's own connection

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        viewer = client_for(Role.VIEWER)
        deadline, page = time.monotonic() + 30, ""
        while time.monotonic() < deadline and 'data-pending="true"' not in page:
            time.sleep(0.5)
            page = viewer.get(f"/runs/{run.pk}/").content.decode()
        assert 'data-step="letters_resolved"' in page and 'data-pending="true"' in page
        assert "waiting" in page and "watching for letters coming back until" in page
    finally:
        services.run_abort(actor=author, run=ReplayRun.objects.get(pk=run.pk), reason="test over")
        worker.join(timeout=30)
    assert outcome == ["stopped"]
    assert 'data-pending="true"' not in client_for(Role.VIEWER).get(f"/runs/{run.pk}/").content.decode()
