"""Issue 7, "bad input": each refused at save time with a clear error naming the field, and
nothing saved."""

from __future__ import annotations

from typing import Any

import pytest

from recovery.drills.errors import DrillInvalid, NotADrillQueue
from recovery.drills.services import drill_create, drill_update
from recovery.drills.validation import is_drill_queue
from recovery.errors import InvalidInput, NotPermitted
from recovery.models import AuditEvent, Broker, BrokerKind, Drill
from tests.factories import BrokerFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 * * * *", "not a valid cron expression"),
        ("* * * *", "not a valid cron expression"),
        ("*/5 * * * * *", "not a valid cron expression"),  # seconds: not a five-field cron
        ("every five minutes", "not a valid cron expression"),
        ("0 0 31 2 *", "never fires"),
        ("", "a cron expression is required"),
    ],
)
def test_it_refuses_a_bad_cron_expression(make_drill: Any, schedule: str, message: str) -> None:
    with pytest.raises(DrillInvalid, match=message) as refused:
        make_drill(schedule=schedule)
    assert refused.value.field == "schedule"
    assert not Drill.objects.exists()


def test_it_accepts_cron_aliases_and_computes_the_next_run(make_drill: Any) -> None:
    drill = make_drill(schedule="@hourly")
    assert drill.next_run_at is not None and drill.next_run_at.minute == 0


@pytest.mark.parametrize(
    ("counts", "field", "message"),
    [
        ({"message_count": 0}, "message_count", "at least one message"),
        ({"message_count": -3}, "message_count", "between 1 and 1,000"),
        ({"message_count": 1_000_000}, "message_count", "between 1 and 1,000"),
        ({"message_count": "six"}, "message_count", "a whole number"),
        ({"transient_count": -1}, "transient_count", "between 0"),
        ({"poison_count": -1}, "poison_count", "between 0"),
        ({"transient_count": 0}, "transient_count", "nothing to replay"),
        ({"message_count": 3, "transient_count": 2, "poison_count": 2}, "transient_count", "exceed the 3 messages"),
    ],
)
def test_it_refuses_a_scenario_that_cannot_run(make_drill: Any, counts: dict, field: str, message: str) -> None:
    with pytest.raises(DrillInvalid, match=message) as refused:
        make_drill(**counts)
    assert refused.value.field == field


def test_it_refuses_a_queue_that_is_not_a_drill_queue(make_drill: Any) -> None:
    with pytest.raises(NotADrillQueue, match="'orders', 'orders.dlq' are not drill queues"):
        make_drill(work_queue="orders", dead_letter_queue="orders.dlq")
    assert not Drill.objects.exists()


def test_only_an_admin_may_choose_another_queue_and_only_with_a_reason(make_drill: Any, people: Any) -> None:
    lent = {"work_queue": "orders", "dead_letter_queue": "orders.dlq", "allow_non_drill_queue": True}
    with pytest.raises(NotADrillQueue, match="only an admin"):
        make_drill(**lent, non_drill_queue_reason="the operator wants it")
    with pytest.raises(NotADrillQueue, match="say why"):
        make_drill(actor=people["admin"], **lent)
    drill = make_drill(actor=people["admin"], **lent, non_drill_queue_reason="staging orders queue, agreed with team")
    assert drill.allow_non_drill_queue and drill.non_drill_queue_admin == people["admin"]
    event = AuditEvent.objects.get(action="drill.created", object_id=str(drill.pk))
    assert event.reason == "staging orders queue, agreed with team"


def test_an_operator_cannot_move_a_drill_onto_another_queue(make_drill: Any, people: Any) -> None:
    drill = make_drill()
    with pytest.raises(NotADrillQueue):
        drill_update(actor=people["author"], drill=drill, changes={"work_queue": "payments"})
    drill.refresh_from_db()
    assert drill.work_queue.startswith("drill-")


def test_the_drill_prefix_defines_a_drill_queue() -> None:
    assert is_drill_queue("drill-orders-work") and is_drill_queue("drill.orders")
    assert not is_drill_queue("orders") and not is_drill_queue("my-drill-queue")


def test_default_queue_names_are_drill_queues(make_drill: Any) -> None:
    drill = make_drill(name="orders-sqs")
    assert (drill.work_queue, drill.dead_letter_queue) == ("drill-orders-sqs-work", "drill-orders-sqs-dlq")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "Not A Slug!"}, "name", "slug"),
        ({"work_queue": "drill-x", "dead_letter_queue": "drill-x"}, "dead_letter_queue", "must differ"),
        ({"batch_size": 100, "rate_per_second": 10}, "template", "above the rate"),
        ({"workers": 0}, "template", "workers"),
        ({"verifications": [{"step": "nonsense"}]}, "template", "nonsense"),
        ({"max_recover_seconds": 900, "timeout_seconds": 300}, "max_recover_seconds", "never be met"),
        ({"timeout_seconds": 5}, "timeout_seconds", "between 30"),
        ({"alert_webhook_url": "ftp://hooks.example"}, "alert_webhook_url", "http"),
        ({"broker": None}, "broker", "choose the broker"),
    ],
)
def test_it_refuses_other_bad_fields(make_drill: Any, data: dict, field: str, message: str) -> None:
    with pytest.raises(DrillInvalid, match=message) as refused:
        make_drill(**data)
    assert refused.value.field == field


def test_sqs_queue_names_and_batch_limits_apply(make_drill: Any) -> None:
    sqs = BrokerFactory(kind=BrokerKind.SQS)
    with pytest.raises(DrillInvalid, match="not a valid sqs name"):
        make_drill(broker=sqs, work_queue="drill.orders")
    with pytest.raises(DrillInvalid, match="sqs limit"):
        make_drill(broker=sqs, batch_size=20)


def test_two_drills_never_share_a_queue(make_drill: Any) -> None:
    first = make_drill()
    with pytest.raises(DrillInvalid, match="uses these queues"):
        make_drill(work_queue=first.dead_letter_queue, dead_letter_queue="drill-other")
    with pytest.raises(DrillInvalid, match="exists already"):
        make_drill(name=first.name)


def test_unknown_fields_and_system_authors_are_refused(people: Any, idle_broker: Broker) -> None:
    data = {"name": "x", "broker": idle_broker, "schedule": "@daily"}
    with pytest.raises(InvalidInput, match="unknown drill fields: colour"):
        drill_create(actor=people["author"], data={**data, "colour": "red"})
    with pytest.raises(NotPermitted, match="needs a signed-in user"):
        drill_create(actor="cli:root", data=data)
    with pytest.raises(NotPermitted):
        drill_create(actor=people["viewer"], data=data)
