"""Preconditions against the real PostgreSQL, real brokers (through their adapters) and a real
HTTP server: each passes when its condition holds and fails with a reason naming what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.utils import timezone

from recovery.models import (
    Broker,
    BrokerKind,
    Category,
    DeadLetterQueue,
    DeadLetterState,
    Disposition,
    PlanItemState,
    ReplayPlan,
    RunState,
)
from recovery.replay import checks
from recovery.replay.checks import CheckResult, passed, run_checks
from recovery.replay.preconditions import default_preconditions, evaluate_preconditions, window_contains
from tests.factories import BrokerFactory, DeadLetterQueueFactory
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def check(plan: ReplayPlan, name: str, **params) -> CheckResult:
    """One precondition on its own (no defaults)."""
    (result,) = run_checks("preconditions", [{"check": name, **params}], plan)
    assert result.name == name
    return result


@pytest.fixture
def db_broker(db):
    """A broker row that is never called (for checks that only read the store)."""

    def make(kind: str = BrokerKind.RABBITMQ, name: str = "chk-offline") -> Broker:
        return BrokerFactory(name=name, kind=kind)

    return make


# -- target_reachable ----------------------------------------------------------------------


def _real_target(harness, chk_target) -> dict:
    if harness.kind == BrokerKind.RABBITMQ:
        return chk_target(harness.broker, "", harness.new_queue())
    if harness.kind == BrokerKind.SQS:
        return chk_target(harness.broker, harness.new_queue())
    return chk_target(harness.broker, harness.new_topic())


def test_target_reachable_passes_for_an_existing_queue_or_topic(harness, chk_plan, chk_item, chk_target) -> None:
    plan = chk_plan()
    chk_item(plan, _real_target(harness, chk_target))
    chk_item(plan, _real_target(harness, chk_target))

    result = check(plan, "target_reachable")

    assert result.ok, result.reason
    assert result.reason == "2 targets on 1 broker reachable"
    assert [t["exists"] for t in result.details["targets"] if "exists" in t] == [True, True]


def test_target_reachable_fails_naming_a_missing_queue(rabbit, chk_plan, chk_item, chk_target) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(rabbit.broker, "", rabbit.new_queue()))
    chk_item(plan, chk_target(rabbit.broker, "", "chk-no-such-queue"))

    result = check(plan, "target_reachable")

    assert not result.ok
    assert result.reason.startswith(f"{rabbit.broker.name}: queue chk-no-such-queue: queue 'chk-no-such-queue'")
    assert "NOT_FOUND" in result.reason


def test_target_reachable_fails_for_a_missing_sqs_queue_and_kafka_topic(
    sqs_harness, kafka_harness, chk_plan, chk_item, chk_target
) -> None:
    plan = chk_plan()
    missing_url = sqs_harness.new_queue().rsplit("/", 1)[0] + "/chk-no-such-queue"
    chk_item(plan, chk_target(sqs_harness.broker, missing_url))
    chk_item(plan, chk_target(kafka_harness.broker, "chk-no-such-topic"))

    result = check(plan, "target_reachable")

    assert not result.ok
    assert "chk-no-such-queue" in result.reason
    assert "topic chk-no-such-topic does not exist" in result.reason


def test_target_reachable_fails_when_the_broker_does_not_answer(
    chk_plan, chk_item, chk_target, chk_down_broker
) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(chk_down_broker, "", "orders"))

    result = check(plan, "target_reachable")

    assert not result.ok
    assert result.reason.startswith("broker chk-down does not answer: ")


def test_target_reachable_does_not_probe_an_exchange(rabbit, chk_plan, chk_item, chk_target) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(rabbit.broker, "amq.direct", "orders"))

    result = check(plan, "target_reachable")

    assert result.ok
    assert result.details["targets"][0] == {
        "target": f"{rabbit.broker.name}: exchange amq.direct → orders", "exists": None,
        "note": "exchange not probed",
    }  # fmt: skip


def test_target_reachable_fails_without_an_included_letter(chk_plan, chk_item, chk_target, db_broker) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(db_broker(), "", "orders"), state=PlanItemState.EXCLUDED)

    result = check(plan, "target_reachable")

    assert (result.ok, result.reason) == (False, "the plan has no included letter, so no target to check")


def test_target_reachable_checks_the_override_of_a_draft(rabbit, chk_plan) -> None:
    plan = chk_plan(target_broker=rabbit.broker, target_routing_key=rabbit.new_queue())

    assert check(plan, "target_reachable").ok


# -- target_depth_below --------------------------------------------------------------------


def test_target_depth_below_reads_the_real_queue(rabbit, chk_plan, chk_item, chk_target) -> None:
    queue = rabbit.make_dlq()
    rabbit.fill(queue, [(b"a", {}), (b"b", {}), (b"c", {})])
    plan = chk_plan()
    chk_item(plan, chk_target(rabbit.broker, "", queue.address))

    full = check(plan, "target_depth_below", max=3)
    roomy = check(plan, "target_depth_below", max=4)

    assert not full.ok
    assert full.reason == f"{rabbit.broker.name}: queue {queue.address} holds 3, not below 3"
    assert full.details["depths"] == [{"target": f"{rabbit.broker.name}: queue {queue.address}", "depth": 3,
                                       "error": ""}]  # fmt: skip
    assert roomy.ok
    assert roomy.reason == "every target below 4 (deepest holds 3)"


def test_target_depth_below_reads_the_queue_behind_an_exchange(rabbit, chk_plan, chk_item, chk_target) -> None:
    queue = rabbit.make_dlq()
    rabbit.fill(queue, [(b"a", {})])
    plan = chk_plan()
    chk_item(plan, chk_target(rabbit.broker, "amq.direct", "orders"))

    without = check(plan, "target_depth_below", max=5)
    behind = check(plan, "target_depth_below", max=5, queue=queue.address)

    assert not without.ok
    assert "an exchange has no depth; give queue" in without.reason
    assert behind.ok, behind.reason


def test_target_depth_below_needs_a_group_for_kafka(kafka_harness, chk_plan, chk_item, chk_target) -> None:
    topic = kafka_harness.make_dlq()
    kafka_harness.fill(topic, [(b"a", {}), (b"b", {})])
    plan = chk_plan()
    chk_item(plan, chk_target(kafka_harness.broker, topic.address))

    without = check(plan, "target_depth_below", max=5)
    lagging = check(plan, "target_depth_below", max=2, group="chk-orders-service")

    assert not without.ok
    assert "a topic's lag is per consumer group; give group" in without.reason
    assert not lagging.ok
    assert lagging.reason == f"{kafka_harness.broker.name}: {topic.address} holds 2, not below 2"


# -- http_health ---------------------------------------------------------------------------


def test_http_health_passes_on_the_expected_status(chk_http, chk_plan) -> None:
    result = check(chk_plan(), "http_health", url=chk_http.url("/status/200"))

    assert result.ok
    assert result.reason.startswith(f"{chk_http.url('/status/200')} answered 200 (as expected) in ")
    assert result.details["http"]["status"] == 200


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/status/503", {}, "answered 503 (expected 200)"),
        ("/status/200", {"expected_status": 204}, "answered 200 (expected 204)"),
        ("/redirect", {}, "answered 302 (expected 200)"),
        ("/slow", {"timeout_s": 0.3}, "did not answer: no answer within 0.3 s"),
    ],
)
def test_http_health_fails_on_another_status_or_no_answer(chk_http, chk_plan, path, params, reason) -> None:
    result = check(chk_plan(), "http_health", url=chk_http.url(path), **params)

    assert not result.ok
    assert reason in result.reason


def test_http_health_fails_when_nothing_listens(chk_plan) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    result = check(chk_plan(), "http_health", url=url)

    assert not result.ok
    assert result.reason.startswith(f"{url} did not answer: ")
    assert "refused" in result.reason.lower()


# -- no_other_active_run_on_target ---------------------------------------------------------


def test_no_other_active_run_fails_when_another_plan_runs_on_the_target(
    chk_plan, chk_item, chk_target, chk_run, db_broker
) -> None:
    broker = db_broker()
    mine, theirs = chk_plan(name="mine"), chk_plan(name="theirs")
    chk_item(mine, chk_target(broker, "", "orders"))
    chk_item(theirs, chk_target(broker, "", "orders"))
    run = chk_run(theirs, state=RunState.PAUSED)

    result = check(mine, "no_other_active_run_on_target")

    assert not result.ok
    assert result.reason == f"run {run.pk} of plan 'theirs' (paused) publishes to chk-offline: queue orders"


def test_no_other_active_run_counts_an_exchange_whatever_the_routing_key(
    chk_plan, chk_item, chk_target, chk_run, db_broker
) -> None:
    broker = db_broker()
    mine, theirs = chk_plan(name="mine"), chk_plan(name="theirs")
    chk_item(mine, chk_target(broker, "orders-x", "created"))
    chk_item(theirs, chk_target(broker, "orders-x", "updated"))
    chk_run(theirs)

    assert not check(mine, "no_other_active_run_on_target").ok


def test_no_other_active_run_ignores_finished_runs_other_targets_and_the_plan_itself(
    chk_plan, chk_item, chk_target, chk_run, db_broker
) -> None:
    broker = db_broker()
    mine, finished, elsewhere = chk_plan(name="mine"), chk_plan(name="finished"), chk_plan(name="elsewhere")
    chk_item(mine, chk_target(broker, "", "orders"))
    chk_item(finished, chk_target(broker, "", "orders"))
    chk_item(elsewhere, chk_target(broker, "", "payments"))
    chk_run(finished, state=RunState.VERIFIED)
    chk_run(elsewhere)
    chk_run(mine, state=RunState.PAUSED)

    result = check(mine, "no_other_active_run_on_target")

    assert result.ok, result.reason
    assert result.reason == "no other active run publishes to this plan's 1 target"


# -- time_window ---------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = {"start": "22:00", "end": "02:00", "days": ["fri"], "timezone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        (datetime(2025, 1, 10, 23, 0), True),  # Friday night
        (datetime(2025, 1, 11, 1, 30), True),  # Saturday early: Friday's window
        (datetime(2025, 1, 11, 2, 0), False),  # the end is exclusive
        (datetime(2025, 1, 10, 1, 30), False),  # Friday early: Thursday's window, not allowed
        (datetime(2025, 1, 11, 22, 30), False),  # Saturday night
        (datetime(2025, 1, 10, 21, 59), False),
    ],
)
def test_a_window_over_midnight_belongs_to_the_day_it_opens(local, inside) -> None:
    assert window_contains(NIGHT, local.replace(tzinfo=BERLIN))[0] is inside


def test_a_window_is_read_in_its_time_zone() -> None:
    winter = datetime(2025, 1, 10, 21, 30, tzinfo=UTC)  # 22:30 CET
    summer = datetime(2025, 7, 4, 20, 30, tzinfo=UTC)  # 22:30 CEST
    summer_before = datetime(2025, 7, 4, 19, 30, tzinfo=UTC)  # 21:30 CEST

    assert window_contains(NIGHT, winter) == (True, "now (fri 22:30) is inside the window fri 22:00-02:00 "
                                                    "(Europe/Berlin)")  # fmt: skip
    assert window_contains(NIGHT, summer)[0]
    assert window_contains(NIGHT, summer_before) == (
        False, "now (fri 21:30) is outside the window fri 22:00-02:00 (Europe/Berlin); it opens next fri 2025-07-04 "
        "22:00",
    )  # fmt: skip


def test_a_daytime_window_says_when_it_opens_next() -> None:
    office = {"start": "09:00", "end": "17:00", "days": ["mon", "tue", "wed", "thu", "fri"], "timezone": "UTC"}

    assert window_contains(office, datetime(2025, 1, 8, 9, 0, tzinfo=UTC))[0]  # Wednesday
    inside, reason = window_contains(office, datetime(2025, 1, 11, 10, 0, tzinfo=UTC))  # Saturday
    assert not inside
    assert reason.endswith("it opens next mon 2025-01-13 09:00")


def test_time_window_check_uses_the_clock(chk_plan) -> None:
    now = timezone.now().astimezone(BERLIN)
    around = {"start": f"{now - timedelta(hours=1):%H:%M}", "end": f"{now + timedelta(hours=1):%H:%M}"}
    later = {"start": f"{now + timedelta(hours=1):%H:%M}", "end": f"{now + timedelta(hours=2):%H:%M}"}

    assert check(chk_plan(), "time_window", timezone="Europe/Berlin", **around).ok
    result = check(chk_plan(), "time_window", timezone="Europe/Berlin", **later)
    assert not result.ok
    assert "is outside the window every day" in result.reason


# -- dispositions_allow --------------------------------------------------------------------


def test_dispositions_allow_passes_for_replayable_letters(chk_plan, chk_item, chk_target, db_broker) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(db_broker(), "", "orders"))

    assert check(plan, "dispositions_allow").reason == "every included letter's disposition allows replay"


def test_dispositions_allow_fails_for_letters_reclassified_after_the_freeze(
    chk_plan, chk_item, chk_letter, chk_target, db_broker
) -> None:
    target = chk_target(db_broker(), "", "orders")
    plan = chk_plan()
    held = chk_letter(disposition=Disposition.HOLD)
    poison = chk_letter(category=Category.POISON)
    chk_item(plan, target)
    chk_item(plan, target, letter=held)
    chk_item(plan, target, letter=poison)
    chk_item(plan, target, letter=chk_letter(disposition=Disposition.DISCARD), state=PlanItemState.EXCLUDED)

    result = check(plan, "dispositions_allow")

    assert not result.ok
    assert result.reason == (
        "2 included letters may not be replayed: 1 category poison, 1 disposition hold (held letters need the "
        f"plan's include-held override); e.g. letters {held.pk}, {poison.pk}"
    )
    assert result.details["letters"] == [held.pk, poison.pk]


def test_dispositions_allow_lets_held_letters_through_with_the_override_but_never_discarded_ones(
    chk_plan, chk_item, chk_letter, chk_target, db_broker
) -> None:
    target = chk_target(db_broker(), "", "orders")
    plan = chk_plan(include_held=True)
    chk_item(plan, target, letter=chk_letter(disposition=Disposition.HOLD, category=Category.POISON))
    assert check(plan, "dispositions_allow").ok

    discarded = chk_letter(state=DeadLetterState.DISCARDED)
    chk_item(plan, target, letter=discarded)
    discard = chk_letter(disposition=Disposition.DISCARD)
    chk_item(plan, target, letter=discard)

    result = check(plan, "dispositions_allow")
    assert not result.ok
    assert result.reason == (
        f"2 included letters may not be replayed: 1 discarded, 1 disposition discard; "
        f"e.g. letters {discarded.pk}, {discard.pk}"
    )


# -- not_near_expiry -----------------------------------------------------------------------


def test_not_near_expiry_fails_for_letters_expiring_within_the_margin(
    chk_plan, chk_item, chk_letter, chk_target, db_broker
) -> None:
    now = timezone.now()
    target = chk_target(db_broker(), "", "orders")
    plan = chk_plan()
    soon = chk_letter(expires_at=now + timedelta(minutes=30))
    gone = chk_letter(expires_at=now - timedelta(hours=1))
    chk_item(plan, target, letter=soon)
    chk_item(plan, target, letter=gone)
    chk_item(plan, target, letter=chk_letter(expires_at=now + timedelta(hours=3)))
    chk_item(plan, target, letter=chk_letter(expires_at=None))
    chk_item(plan, target, letter=chk_letter(expires_at=now), state=PlanItemState.EXCLUDED)

    result = check(plan, "not_near_expiry", min_hours=1)

    assert not result.ok
    assert result.reason == (
        f"2 included letters expire within 1 h (1 already expired); the first at {gone.expires_at:%Y-%m-%d %H:%M} "
        f"UTC; e.g. letters {gone.pk}, {soon.pk}"
    )
    assert check(plan, "not_near_expiry", min_hours=0.25).details["count"] == 1


def test_not_near_expiry_passes_when_every_letter_has_time(
    chk_plan, chk_item, chk_letter, chk_target, db_broker
) -> None:
    plan = chk_plan()
    chk_item(
        plan, chk_target(db_broker(), "", "orders"), letter=chk_letter(expires_at=timezone.now() + timedelta(days=2))
    )

    assert check(plan, "not_near_expiry", min_hours=24).reason == "no included letter expires within 24 h"


# -- json_schema ---------------------------------------------------------------------------

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order"],
    "properties": {"order": {"type": "integer"}},
}


@pytest.fixture
def schema_dlq(chk_dlq) -> DeadLetterQueue:
    return DeadLetterQueueFactory(broker=chk_dlq.broker, name="chk-schema-dlq", replay_schema=ORDER_SCHEMA)


def test_json_schema_passes_without_a_schema(chk_plan, chk_item, chk_target, db_broker) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(db_broker(), "", "orders"))

    assert check(plan, "json_schema").reason == "no DLQ of this plan's letters has a replay schema"


def test_json_schema_validates_each_body_against_its_dlqs_schema(
    chk_plan, chk_item, chk_letter, chk_target, db_broker, schema_dlq
) -> None:
    target = chk_target(db_broker(), "", "orders")
    plan = chk_plan()
    chk_item(plan, target, letter=chk_letter(dlq=schema_dlq, body=b'{"order": 7}'))
    chk_item(plan, target, letter=chk_letter(body=b"not json at all"))  # its DLQ has no schema
    assert check(plan, "json_schema").reason == "all 1 bodies validate against their DLQ's replay schema"

    wrong = chk_letter(dlq=schema_dlq, body=b'{"order": "seven"}')
    garbage = chk_letter(dlq=schema_dlq, body=b"\xff\xfe{")
    chk_item(plan, target, letter=wrong)
    chk_item(plan, target, letter=garbage)

    result = check(plan, "json_schema")

    assert not result.ok
    assert result.reason == (
        f"2 of 3 checked bodies fail their DLQ's replay schema; first: letter {wrong.pk}: 'seven' is not of type "
        "'integer' at $.order"
    )
    assert result.details["failures"][1]["error"].startswith("not JSON: ")
    assert (result.details["checked"], result.details["failed"], result.details["unchecked"]) == (3, 2, 0)


def test_json_schema_stops_after_twenty_failures(
    chk_plan, chk_item, chk_letter, chk_target, db_broker, schema_dlq
) -> None:
    target = chk_target(db_broker(), "", "orders")
    plan = chk_plan()
    for _ in range(25):
        chk_item(plan, target, letter=chk_letter(dlq=schema_dlq, body=b"{}"))

    result = check(plan, "json_schema")

    assert not result.ok
    assert result.reason.startswith("20 of 20 checked bodies fail their DLQ's replay schema; stopped after 20, 5 not")
    assert "'order' is a required property at $" in result.reason
    assert (result.details["checked"], result.details["failed"], result.details["unchecked"]) == (20, 20, 5)


def test_json_schema_fails_on_an_invalid_schema(chk_plan, chk_item, chk_letter, chk_target, db_broker, schema_dlq):
    DeadLetterQueue.objects.filter(pk=schema_dlq.pk).update(replay_schema={"type": 12})
    plan = chk_plan()
    chk_item(plan, chk_target(db_broker(), "", "orders"), letter=chk_letter(dlq=schema_dlq))

    result = check(plan, "json_schema")

    assert not result.ok
    assert result.reason.startswith("the replay schema of DLQ chk-schema-dlq is not a valid JSON Schema: 12 is not")


# -- sqs_fifo_cooldown ---------------------------------------------------------------------


@pytest.fixture
def fifo_target(db_broker, chk_target) -> dict:
    return chk_target(db_broker(BrokerKind.SQS, "chk-sqs"), "http://127.0.0.1:1/000000000000/orders.fifo")


def test_sqs_fifo_cooldown_fails_within_five_minutes_of_an_earlier_run(
    chk_plan, chk_item, chk_run, chk_ledger, fifo_target
) -> None:
    plan = chk_plan()
    item = chk_item(plan, fifo_target)
    earlier = chk_run(plan, state=RunState.ABORTED)
    published = timezone.now() - timedelta(minutes=2)
    chk_ledger(earlier, item, published_at=published)

    result = check(plan, "sqs_fifo_cooldown")

    assert not result.ok
    free = published + timedelta(minutes=5)
    assert result.reason.startswith(
        f"run {earlier.pk} of this plan published to chk-sqs: http://127.0.0.1:1/000000000000/orders.fifo at "
        f"{published:%H:%M:%S} UTC; SQS would drop the same deduplication ids until {free:%H:%M:%S} UTC (wait 18"
    )


def test_sqs_fifo_cooldown_passes_after_five_minutes_and_for_other_plans(
    chk_plan, chk_item, chk_run, chk_ledger, fifo_target
) -> None:
    plan, other = chk_plan(), chk_plan(name="other")
    item = chk_item(plan, fifo_target)
    chk_ledger(chk_run(plan, state=RunState.VERIFIED), item, published_at=timezone.now() - timedelta(minutes=6))
    other_item = chk_item(other, fifo_target)
    chk_ledger(chk_run(other), other_item, published_at=timezone.now())  # other replay ids: no clash

    result = check(plan, "sqs_fifo_cooldown")

    assert result.ok, result.reason
    assert result.reason == "no run of this plan published to its 1 FIFO target in the last 5 min"


def test_sqs_fifo_cooldown_ignores_standard_queues(chk_plan, chk_item, chk_target, db_broker) -> None:
    plan = chk_plan()
    chk_item(plan, chk_target(db_broker(BrokerKind.SQS, "chk-sqs"), "http://127.0.0.1:1/000000000000/orders"))

    assert check(plan, "sqs_fifo_cooldown").reason == "no SQS FIFO target"


# -- evaluate_preconditions ----------------------------------------------------------------


def test_every_plan_gets_the_defaults_and_its_own_entry_replaces_a_default(
    rabbit, chk_plan, chk_item, chk_letter, chk_target
) -> None:
    plan = chk_plan(preconditions=[{"check": "not_near_expiry", "min_hours": 6}, {"check": "target_depth_below",
                                                                                   "max": 100}])  # fmt: skip
    chk_item(plan, chk_target(rabbit.broker, "", rabbit.new_queue()),
             letter=chk_letter(expires_at=timezone.now() + timedelta(hours=3)))  # fmt: skip

    results = evaluate_preconditions(plan, stage="submit")

    assert [r.name for r in results] == [
        "target_reachable", "no_other_active_run_on_target", "dispositions_allow", "sqs_fifo_cooldown",
        "json_schema", "not_near_expiry", "target_depth_below",
    ]  # fmt: skip
    failing = [(r.name, r.details["params"]) for r in results if not r.ok]
    assert failing == [("not_near_expiry", {"min_hours": 6})]
    assert [d["check"] for d in default_preconditions(plan)] == [
        "target_reachable", "no_other_active_run_on_target", "dispositions_allow", "not_near_expiry",
        "sqs_fifo_cooldown", "json_schema",
    ]  # fmt: skip


def test_during_a_run_only_the_checks_that_can_change_are_evaluated(chk_plan, chk_item, chk_target, rabbit):
    plan = chk_plan(preconditions=[{"check": "time_window", "start": "00:00", "end": "23:59"}])
    chk_item(plan, chk_target(rabbit.broker, "", rabbit.new_queue()))

    results = evaluate_preconditions(plan, stage="run")

    assert [r.name for r in results] == ["target_reachable", "no_other_active_run_on_target", "time_window"]


def test_an_invalid_stored_entry_fails_instead_of_raising(chk_plan, chk_item, chk_target, db_broker) -> None:
    plan = chk_plan(preconditions=[{"check": "nope"}, {"check": "target_depth_below", "max": -1}, "junk"])
    chk_item(plan, chk_target(db_broker(), "", "orders"))

    results = [r for r in evaluate_preconditions(plan, stage="approve") if r.reason.startswith("invalid")]

    assert [(r.name, r.ok) for r in results] == [("nope", False), ("target_depth_below", False), ("?", False)]
    assert results[0].reason.startswith("invalid configuration: precondition 1: unknown check 'nope'; known: ")
    assert "max: a whole number from 1" in results[1].reason


@pytest.fixture
def broken_check():
    """A precondition whose query fails, registered for one test."""

    @checks.register("preconditions", "chk_broken")
    def broken(plan, params):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM chk_no_such_table")
        return passed("unreachable")

    yield "chk_broken"
    del checks._REGISTRY["preconditions"]["chk_broken"]


def test_a_check_that_errors_fails_and_leaves_the_callers_transaction_usable(
    broken_check, chk_plan, chk_item, chk_target, db_broker
) -> None:
    plan = chk_plan(preconditions=[{"check": broken_check}])
    chk_item(plan, chk_target(db_broker(), "", "orders"), letter=None)

    with transaction.atomic():
        results = evaluate_preconditions(plan, stage="start")
        assert ReplayPlan.objects.filter(pk=plan.pk).exists()  # the transaction is not aborted

    broken = next(r for r in results if r.name == broken_check)
    assert not broken.ok
    assert broken.reason.startswith('could not evaluate: ProgrammingError: relation "chk_no_such_table" does not exist')


def test_an_unknown_stage_is_a_programming_error(chk_plan) -> None:
    with pytest.raises(ValueError, match="unknown stage 'later'"):
        evaluate_preconditions(chk_plan(), stage="later")


def test_results_are_json_evidence(chk_plan, chk_http) -> None:
    result = check(chk_plan(), "http_health", url=chk_http.url("/status/200"))

    assert json.loads(json.dumps(result.as_dict()))["details"]["params"]["url"] == chk_http.url("/status/200")


def test_a_running_worker_evaluates_only_the_checks_that_can_pause_it(chk_plan, chk_item, chk_target, db_broker):
    """The engine asks every 10 s for the run-stage checks that can pause a run; the others (such as
    target_reachable, which opens a connection to the broker) are not evaluated for it."""
    from recovery.replay.checks import WEEKDAYS
    from recovery.replay.engine import RUN_STAGE_PRECONDITIONS
    from recovery.replay.selectors import failing_preconditions

    not_today = WEEKDAYS[(timezone.now().weekday() + 3) % 7]  # a window closed all day today
    plan = chk_plan(preconditions=[{"check": "time_window", "start": "00:00", "end": "23:59", "days": [not_today]},
                                   {"check": "nope"}])  # fmt: skip
    chk_item(plan, chk_target(db_broker(), "", "orders"))  # an unreachable broker: target_reachable would fail

    every = {r.name for r in evaluate_preconditions(plan, stage="run")}
    asked = evaluate_preconditions(plan, stage="run", only=RUN_STAGE_PRECONDITIONS)

    assert {"target_reachable", "time_window", "nope"} <= every
    assert [r.name for r in asked] == ["time_window"]
    assert [r.name for r in failing_preconditions(plan, stage="run", only=RUN_STAGE_PRECONDITIONS)] == ["time_window"]
