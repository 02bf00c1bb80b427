"""Stop conditions over a run's real ledger, events and captured letters, a real broker's depth
and a real HTTP server: each trips (ok False) with a reason giving the numbers, and carries the
action (pause by default, or abort)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from recovery.models import Broker, BrokerKind, RunEvent
from recovery.replay.stop_conditions import evaluate_stop_conditions
from tests.factories import BrokerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def offline_broker(db) -> Broker:
    return BrokerFactory(kind=BrokerKind.RABBITMQ)


@pytest.fixture
def running(chk_plan, chk_item, chk_target, chk_run, offline_broker):
    """A run started 10 minutes ago whose plan has ``n`` items, with the given stop conditions."""

    def make(conditions: list[dict], *, n: int = 0, target: dict | None = None):
        now = timezone.now()
        plan = chk_plan(stop_conditions=conditions)
        items = [chk_item(plan, target or chk_target(offline_broker, "", "orders")) for _ in range(n)]
        run = chk_run(plan, started_at=now - timedelta(minutes=10))
        return run, items, now

    return make


def _one(run, now):
    (result,) = evaluate_stop_conditions(run, now=now)
    return result


def _event(run, at, message: str, **data) -> RunEvent:
    event = RunEvent.objects.create(run=run, kind="publish-error", message=message, data=data)
    RunEvent.objects.filter(pk=event.pk).update(at=at)
    return event


# -- redeadletter_rate -----------------------------------------------------------------------

REDEADLETTER = {"condition": "redeadletter_rate", "max_percent": 5, "window_s": 60}


def test_redeadletter_rate_trips_above_the_threshold_with_the_numbers(running, chk_ledger, chk_letter) -> None:
    run, items, now = running([REDEADLETTER], n=42)
    for item in items[:40]:
        chk_ledger(run, item, published_at=now - timedelta(seconds=30))
    for item in items[40:]:
        chk_ledger(run, item, published_at=now - timedelta(seconds=90))  # before the window
    for item in items[:5]:
        chk_letter(replay_id=item.replay_id, captured_at=now - timedelta(seconds=10))
    chk_letter(replay_id=items[40].replay_id, captured_at=now - timedelta(seconds=80))  # before the window
    chk_letter(replay_id="r-of-another-plan", captured_at=now - timedelta(seconds=5))

    result = _one(run, now)

    assert (result.name, result.ok) == ("redeadletter_rate", False)
    assert result.reason == "re-dead-letter rate 12.5% (5 of 40) over 60 s > 5%"
    assert (result.details["published"], result.details["redeadlettered"]) == (40, 5)
    assert result.details["action"] == "pause"


def test_redeadletter_rate_passes_at_or_below_the_threshold(running, chk_ledger, chk_letter) -> None:
    run, items, now = running([{**REDEADLETTER, "action": "abort"}], n=20)
    for item in items:
        chk_ledger(run, item, published_at=now - timedelta(seconds=5))
    chk_letter(replay_id=items[0].replay_id, captured_at=now - timedelta(seconds=1))

    result = _one(run, now)

    assert result.ok
    assert result.reason == "re-dead-letter rate 5% (1 of 20) over 60 s ≤ 5%"
    assert result.details["action"] == "abort"


def test_redeadletter_rate_waits_for_enough_publishes_in_the_window(running, chk_ledger, chk_letter) -> None:
    run, items, now = running([REDEADLETTER], n=3)
    for item in items:
        chk_ledger(run, item, published_at=now - timedelta(seconds=5))
        chk_letter(replay_id=item.replay_id, captured_at=now - timedelta(seconds=1))

    result = _one(run, now)

    assert result.ok
    assert result.reason == "3 messages published in the last 60 s (3 came back); the rate is judged from 5 on"


def test_redeadletter_rate_ignores_letters_from_before_the_run_started(
    running, chk_ledger, chk_letter, chk_run
) -> None:
    run, items, now = running([{**REDEADLETTER, "window_s": 3600}], n=10)
    for item in items:
        chk_ledger(run, item, published_at=now - timedelta(seconds=30))
        # an earlier run of the same plan (same replay ids) made these come back 20 minutes ago
        chk_letter(replay_id=item.replay_id, captured_at=now - timedelta(minutes=20))

    result = _one(run, now)

    assert result.ok
    assert result.reason == "re-dead-letter rate 0% (0 of 10) over 3600 s ≤ 5%"


# -- publish_error_rate ----------------------------------------------------------------------

ERRORS = {"condition": "publish_error_rate", "max_percent": 10, "window_s": 60}


def test_publish_error_rate_trips_from_the_publish_error_events(running, chk_ledger) -> None:
    run, items, now = running([ERRORS], n=7)
    for item in items:
        chk_ledger(run, item, published_at=now - timedelta(seconds=20))
    _event(run, now - timedelta(seconds=10), "2 of 5 not confirmed: 503 Service Unavailable")
    _event(run, now - timedelta(seconds=5), "a message the engine may word differently", errors=1)
    _event(run, now - timedelta(seconds=300), "50 of 50 not confirmed: long ago")  # before the window

    result = _one(run, now)

    assert not result.ok
    assert result.reason == "publish error rate 30% (3 of 10 attempts) over 60 s > 10%"
    assert (result.details["published"], result.details["failed_attempts"]) == (7, 3)


def test_publish_error_rate_passes_when_publishes_are_confirmed(running, chk_ledger) -> None:
    run, items, now = running([ERRORS], n=10)
    for item in items:
        chk_ledger(run, item, published_at=now - timedelta(seconds=20))

    result = _one(run, now)

    assert result.ok
    assert result.reason == "publish error rate 0% (0 of 10 attempts) over 60 s ≤ 10%"


def test_publish_error_rate_waits_for_enough_attempts(running) -> None:
    run, _items, now = running([ERRORS])
    _event(run, now - timedelta(seconds=1), "2 of 2 not confirmed: boom")

    result = _one(run, now)

    assert result.ok
    assert result.reason == "2 publish attempts in the last 60 s (2 failed); the rate is judged from 5 on"


# -- consecutive_failures ----------------------------------------------------------------------

CONSECUTIVE = {"condition": "consecutive_failures", "max": 5}


def test_consecutive_failures_trips_on_more_failures_than_max_since_the_last_publish(running, chk_ledger) -> None:
    run, items, now = running([CONSECUTIVE], n=2)
    last = now - timedelta(seconds=60)
    chk_ledger(run, items[0], published_at=last)
    _event(run, last - timedelta(seconds=5), "10 of 10 not confirmed: before the last success")
    _event(run, now - timedelta(seconds=30), "2 of 2 not confirmed: timeout")
    _event(run, now - timedelta(seconds=20), "2 of 2 not confirmed: timeout")
    _event(run, now - timedelta(seconds=10), "2 of 2 not confirmed: connection reset")

    result = _one(run, now)

    assert not result.ok
    assert result.reason == (
        f"at least 6 publish attempts failed in a row since the last confirmed publish at {last:%H:%M:%S} UTC "
        "(more than 5); last: 2 of 2 not confirmed: connection reset"
    )


def test_consecutive_failures_resets_with_a_confirmed_publish(running, chk_ledger) -> None:
    run, items, now = running([CONSECUTIVE], n=1)
    _event(run, now - timedelta(seconds=30), "6 of 6 not confirmed: timeout")
    chk_ledger(run, items[0], published_at=now - timedelta(seconds=20))

    result = _one(run, now)

    assert result.ok
    assert result.reason == "0 failed publish attempt(s) in a row (at most 5)"


def test_consecutive_failures_counts_from_the_start_when_nothing_was_confirmed(running) -> None:
    run, _items, now = running([{**CONSECUTIVE, "max": 3}])
    _event(run, now - timedelta(seconds=2), "4 of 4 not confirmed: NOT_FOUND - no exchange 'orders'")

    result = _one(run, now)

    assert not result.ok
    assert result.reason.startswith("at least 4 publish attempts failed in a row and none confirmed (more than 3)")


# -- target_depth_above ------------------------------------------------------------------------


def test_target_depth_above_reads_the_real_target(running, rabbit, chk_target) -> None:
    queue = rabbit.make_dlq()
    rabbit.fill(queue, [(b"a", {}), (b"b", {}), (b"c", {})])
    target = chk_target(rabbit.broker, "", queue.address)
    deep, _items, now = running([{"condition": "target_depth_above", "max": 2, "action": "abort"}], n=1, target=target)
    fine, _items, _now = running([{"condition": "target_depth_above", "max": 3}], n=1, target=target)

    tripped = _one(deep, now)

    assert not tripped.ok
    assert tripped.reason == f"{rabbit.broker.name}: queue {queue.address} holds 3 > 2"
    assert tripped.details["action"] == "abort"
    assert tripped.details["depths"][0]["depth"] == 3
    assert _one(fine, now).reason == "deepest target holds 3 ≤ 3"


def test_target_depth_above_trips_when_the_depth_cannot_be_read(running, chk_target, chk_down_broker) -> None:
    target = chk_target(chk_down_broker, "", "q")
    run, _items, now = running([{"condition": "target_depth_above", "max": 100}], n=1, target=target)

    result = _one(run, now)

    assert not result.ok
    assert result.reason.startswith("could not read the depth of chk-down: queue q: ")


# -- health_check_failing, max_duration ------------------------------------------------------


def test_health_check_failing_trips_when_the_health_url_stops_answering_200(running, chk_http) -> None:
    run, _items, now = running([{"condition": "health_check_failing", "url": chk_http.url("/health")}])

    assert _one(run, now).ok
    chk_http.set_health(503)
    result = _one(run, now)

    assert not result.ok
    assert result.reason.startswith(f"{chk_http.url('/health')} answered 503 (expected 200) in ")
    assert result.details["http"]["status"] == 503


def test_max_duration_trips_once_the_run_is_older(running) -> None:
    run, _items, now = running([{"condition": "max_duration", "seconds": 300}, {"condition": "max_duration",
                                                                                "seconds": 3600}])  # fmt: skip

    short, long = evaluate_stop_conditions(run, now=now)

    assert (short.ok, short.reason) == (False, "running for 600 s > 300 s")
    assert (long.ok, long.reason) == (True, "running for 600 s ≤ 3,600 s")


# -- evaluation --------------------------------------------------------------------------------


def test_a_plan_without_stop_conditions_never_trips(running) -> None:
    run, _items, now = running([])

    assert evaluate_stop_conditions(run, now=now) == []


def test_an_invalid_stored_condition_trips_keeping_its_action(running) -> None:
    run, _items, now = running([{"condition": "max_duraton", "seconds": 5, "action": "abort"}])

    result = _one(run, now)

    assert not result.ok
    assert result.reason.startswith("invalid configuration: stop condition 1: unknown condition 'max_duraton'")
    assert result.details["action"] == "abort"


def test_every_result_carries_its_action(running) -> None:
    run, _items, now = running([REDEADLETTER, {**ERRORS, "action": "abort"}, {"condition": "max_duration",
                                                                             "seconds": 60}])  # fmt: skip

    results = evaluate_stop_conditions(run, now=now)

    assert [(r.name, r.details["action"]) for r in results] == [
        ("redeadletter_rate", "pause"), ("publish_error_rate", "abort"), ("max_duration", "pause"),
    ]  # fmt: skip


def test_an_invalid_stored_entry_trips_instead_of_raising(running) -> None:
    """Data written past the plan form (not a JSON object) must not break the run page or the
    worker: it is a failed result, so the run pauses with a reason."""
    run, _items, now = running(["not an object"])
    result = _one(run, now)
    assert not result.ok and result.details["action"] == "pause"


def test_unreachable_target_attempts_count_as_consecutive_failures(running) -> None:
    run, _items, now = running([{"condition": "consecutive_failures", "max": 2}])
    for seconds in (30, 20, 10):
        event = RunEvent.objects.create(run=run, kind="target-unreachable", message="5 letter(s) not sent: down")
        RunEvent.objects.filter(pk=event.pk).update(at=now - timedelta(seconds=seconds))
    assert not _one(run, now).ok
