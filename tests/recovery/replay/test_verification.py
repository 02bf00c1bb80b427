"""Verification steps over a run's real ledger and captured letters, a real broker's depth and a
real HTTP server. Steps with a window are called repeatedly: pending until the window is over,
unless the evidence already decides."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from recovery.models import BrokerKind
from recovery.replay.verification import run_verification_step
from tests.factories import BrokerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(chk_plan, chk_item, chk_target, chk_run, chk_ledger, db):
    """A run whose ``n`` letters were published ``ago`` seconds before now (the last one)."""

    def make(n: int = 3, *, ago: float = 10, target: dict | None = None):
        now = timezone.now()
        if target is None:
            broker = BrokerFactory(kind=BrokerKind.RABBITMQ)
            target = chk_target(broker, "", "orders")
        plan = chk_plan()
        run = chk_run(plan, started_at=now - timedelta(minutes=5))
        items = [chk_item(plan, target) for _ in range(n)]
        for i, item in enumerate(items):
            chk_ledger(run, item, published_at=now - timedelta(seconds=ago + n - 1 - i))
        return run, items, now

    return make


NO_COMEBACK = {"step": "no_redeadletter_within", "seconds": 60}


# -- no_redeadletter_within ------------------------------------------------------------------


def test_no_redeadletter_is_pending_until_the_window_is_over_then_passes(published) -> None:
    run, _items, now = published(ago=10)
    ends = now - timedelta(seconds=10) + timedelta(seconds=60)

    waiting = run_verification_step(run, NO_COMEBACK, now=now)
    later = run_verification_step(run, NO_COMEBACK, now=now + timedelta(seconds=51))

    assert (waiting.ok, waiting.pending) == (False, True)
    assert waiting.reason == f"none of 3 replayed messages back so far; watching until {ends:%H:%M:%S} UTC (50 s left)"
    assert (later.ok, later.pending) == (True, False)
    assert later.reason == "none of 3 replayed messages came back within 60 s of the last publish"
    assert later.details["published"] == 3
    assert later.details["window_ends_at"] == ends.isoformat()


def test_no_redeadletter_fails_as_soon_as_a_replayed_message_comes_back(published, chk_letter) -> None:
    run, items, now = published(ago=10)
    back = chk_letter(replay_id=items[1].replay_id, captured_at=now - timedelta(seconds=2))

    result = run_verification_step(run, NO_COMEBACK, now=now)

    assert (result.ok, result.pending) == (False, False)
    assert result.reason == f"1 replayed message of 3 came back to a DLQ (letters {back.pk})"
    assert result.details["redeadlettered"] == 1


def test_no_redeadletter_ignores_what_came_back_before_the_run_published(published, chk_letter) -> None:
    run, items, now = published(ago=100)
    chk_letter(replay_id=items[0].replay_id, captured_at=now - timedelta(minutes=30))  # an earlier run's

    assert run_verification_step(run, NO_COMEBACK, now=now).ok


def test_no_redeadletter_notes_a_dlq_captured_less_often_than_the_window(published, chk_dlq) -> None:
    run, _items, now = published(ago=100)

    result = run_verification_step(run, {"step": "no_redeadletter_within", "seconds": 30}, now=now)

    assert result.ok
    assert result.reason.endswith(f"(note: {chk_dlq.name} captured less often than every 30 s)")
    assert result.details["slow_capture"] == [chk_dlq.name]


def test_no_redeadletter_fails_when_nothing_was_published(chk_plan, chk_run) -> None:
    result = run_verification_step(chk_run(chk_plan()), NO_COMEBACK)

    assert (result.ok, result.pending) == (False, False)
    assert result.reason == "the run has published nothing, so there is nothing to verify"


# -- target_depth_below_within ---------------------------------------------------------------


def test_target_depth_below_within_passes_once_the_real_target_drained(published, rabbit, chk_target) -> None:
    run, _items, now = published(ago=5, target=chk_target(rabbit.broker, "", rabbit.new_queue()))

    result = run_verification_step(run, {"step": "target_depth_below_within", "max": 1, "seconds": 120}, now=now)

    assert result.ok
    assert result.reason == "every target below 1 5 s after the last publish (deepest holds 0)"
    assert result.details["depths"][0]["depth"] == 0


def test_target_depth_below_within_waits_then_fails_while_the_target_stays_full(published, rabbit, chk_target) -> None:
    queue = rabbit.make_dlq()
    rabbit.fill(queue, [(b"a", {}), (b"b", {}), (b"c", {})])
    run, _items, now = published(ago=5, target=chk_target(rabbit.broker, "", queue.address))
    step = {"step": "target_depth_below_within", "max": 2, "seconds": 60}
    ends = now - timedelta(seconds=5) + timedelta(seconds=60)
    where = f"{rabbit.broker.name}: queue {queue.address}"

    waiting = run_verification_step(run, step, now=now)
    over = run_verification_step(run, step, now=now + timedelta(seconds=56))

    assert (waiting.ok, waiting.pending) == (False, True)
    assert waiting.reason == f"{where} holds 3, not yet below 2; waiting until {ends:%H:%M:%S} UTC"
    assert (over.ok, over.pending) == (False, False)
    assert over.reason == f"60 s after the last publish {where} holds 3, not below 2"
    assert over.details["depths"] == [{"target": where, "depth": 3, "error": ""}]


# -- http_check ------------------------------------------------------------------------------


def test_http_check_passes_and_fails_on_the_status(published, chk_http) -> None:
    run, _items, _now = published()

    good = run_verification_step(run, {"step": "http_check", "url": chk_http.url("/status/200")})
    bad = run_verification_step(run, {"step": "http_check", "url": chk_http.url("/status/500")})

    assert good.ok
    assert (bad.ok, bad.pending) == (False, False)
    assert bad.reason.startswith(f"{chk_http.url('/status/500')} answered 500 (expected 200) in ")
    assert bad.details["http"]["status"] == 500


# -- evaluation ------------------------------------------------------------------------------


def test_an_invalid_step_fails_instead_of_raising(published) -> None:
    run, _items, _now = published()

    result = run_verification_step(run, {"step": "no_redeadletter_within"})

    assert (result.name, result.ok) == ("no_redeadletter_within", False)
    assert result.reason == ("invalid configuration: verification step 1 (no_redeadletter_within): seconds is missing")


def test_the_evidence_is_json(published, chk_http) -> None:
    run, _items, now = published()
    steps = [NO_COMEBACK, {"step": "http_check", "url": chk_http.url("/status/200")}]

    evidence = [run_verification_step(run, step, now=now).as_dict() for step in steps]

    assert json.loads(json.dumps(evidence))[0]["pending"] is True
