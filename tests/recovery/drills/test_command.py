"""`manage.py drill`: the same services as the console, with their errors as CommandErrors."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from recovery.models import Drill, DrillRun, DrillTrigger

pytestmark = pytest.mark.django_db


def drill(*args: str) -> str:
    out = StringIO()
    call_command("drill", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def defined(people: Any, idle_broker: Any) -> Drill:
    drill("define", "orders", "--broker", idle_broker.name, "--schedule", "*/30 * * * *",
          "--as", people["author"].username, "--messages", "8", "--transient", "3", "--poison", "2")  # fmt: skip
    return Drill.objects.get(name="orders")


def test_define_creates_a_drill_that_waits_for_approval(defined: Drill, people: Any) -> None:
    assert (defined.author, defined.message_count, defined.transient_count, defined.poison_count) == (
        people["author"], 8, 3, 2,
    )  # fmt: skip
    assert (defined.work_queue, defined.dead_letter_queue) == ("drill-orders-work", "drill-orders-dlq")
    assert "NOT APPROVED" in drill("list")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--schedule", "99 * * * *"], "schedule: '99 \\* \\* \\* \\*' is not a valid cron expression"),
        (["--messages", "0"], "message_count: a drill needs at least one message"),
        (["--work-queue", "orders", "--dlq", "orders.dlq"], "are not drill queues"),
        (["--transient", "5", "--poison", "5"], "exceed the 6 messages"),
    ],
)
def test_define_refuses_bad_input_clearly(people: Any, idle_broker: Any, extra: list[str], message: str) -> None:
    base = ["define", "bad", "--broker", idle_broker.name, "--schedule", "@daily", "--as", people["author"].username]
    with pytest.raises(CommandError, match=message):
        drill(*base, *extra)
    assert not Drill.objects.exists()


def test_define_refuses_unknown_brokers_and_users(people: Any, idle_broker: Any) -> None:
    with pytest.raises(CommandError, match="no broker named 'nope'"):
        drill("define", "x", "--broker", "nope", "--schedule", "@daily", "--as", people["author"].username)
    with pytest.raises(CommandError, match="no active user named 'ghost'"):
        drill("define", "x", "--broker", idle_broker.name, "--schedule", "@daily", "--as", "ghost")


def test_an_admin_may_define_a_drill_on_a_lent_queue_with_a_reason(people: Any, idle_broker: Any) -> None:
    drill("define", "lent", "--broker", idle_broker.name, "--schedule", "@daily", "--as", people["admin"].username,
          "--work-queue", "staging.orders", "--dlq", "staging.orders.dlq", "--allow-non-drill-queue",
          "--reason", "the staging orders pair, agreed with its team")  # fmt: skip
    assert Drill.objects.get(name="lent").allow_non_drill_queue


def test_approve_holds_four_eyes(defined: Drill, people: Any) -> None:
    with pytest.raises(CommandError, match="may not approve"):  # an operator, not an approver
        drill("approve", "orders", "--as", people["author"].username)
    assert "approved" in drill("approve", "orders", "--as", people["approver"].username, "--comment", "ok")
    assert f"approved by {people['approver'].username}" in drill("show", "orders")


def test_run_now_refuses_an_unapproved_drill_then_queues_a_run(defined: Drill, people: Any) -> None:
    with pytest.raises(CommandError, match="cannot run: it has not been approved"):
        drill("run-now", "orders")
    drill("approve", "orders", "--as", people["approver"].username)
    assert "queued" in drill("run-now", "orders")
    run = DrillRun.objects.get(drill=defined)
    assert run.trigger == DrillTrigger.MANUAL and run.requested_by is None
    assert f"run {run.pk}" in drill("show", "orders")


def test_set_schedule_changes_the_cron_and_voids_the_approval(defined: Drill, people: Any) -> None:
    drill("approve", "orders", "--as", people["approver"].username)
    out = drill("set-schedule", "orders", "0 3 * * *", "--as", people["author"].username)
    assert "0 3 * * *" in out and "approval is void" in out
    defined.refresh_from_db()
    assert defined.schedule == "0 3 * * *" and defined.next_run_at.hour == 3
    with pytest.raises(CommandError, match="not a valid cron expression"):
        drill("set-schedule", "orders", "0 25 * * *")
    assert "(paused)" in drill("set-schedule", "orders", "--disable")
    with pytest.raises(CommandError, match="give a cron expression"):
        drill("set-schedule", "orders")


def test_show_refuses_an_unknown_drill() -> None:
    with pytest.raises(CommandError, match="no drill named 'nope'"):
        drill("show", "nope")
