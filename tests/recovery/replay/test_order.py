"""Order on replay (invariant 13), against the real brokers: letters of one SQS FIFO message group,
and of one Kafka key within a source partition, reach the target in their original order when two
workers replay them; a letter that cannot be sent holds the rest of its group ("blocked behind
letter N") until an operator releases the group, audited; then the rest goes, still in order."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from django.db import connection, transaction

from recovery.brokers.base import Target
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import (
    AttemptState,
    AuditAction,
    AuditEvent,
    CaptureTrigger,
    DeadLetter,
    Disposition,
    LedgerEntry,
    PlanItem,
    ReplayRun,
    RunState,
    TriageActionKind,
)
from recovery.permissions import Role
from recovery.replay import ordering, services
from recovery.replay.engine import Worker
from recovery.triage.filters import LetterFilter
from recovery.triage.services import letters_triage
from tests.namespace import unique
from tests.recovery.replay.helpers import approved_plan, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

GROUPS, PER_GROUP = 10, 20


# -- replaying with two workers ------------------------------------------------------------------


def _run_workers(run: ReplayRun, workers: int = 2) -> list[str]:
    """Run the run's workers side by side, each in a thread with its own database connection,
    until each returns (the run ended, paused or moved to verification)."""
    results: list[str] = []

    def work(number: int) -> None:
        try:
            results.append(Worker(run.pk, number).run())
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a worker did not return"
    return results


def _capture_all(dlq: Any, expected: int) -> list[DeadLetter]:
    """One capture pass stores every dead letter (a FIFO queue's message groups included: a pass
    reads until the DLQ is empty: tests/recovery/capture/test_completeness.py), then the
    letters are classified for replay as an operator's bulk action would."""
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    letters = list(DeadLetter.objects.filter(dlq=dlq).order_by("id"))
    assert len(letters) == expected
    DeadLetter.objects.filter(dlq=dlq).update(disposition=Disposition.REPLAY, classified_by="manual")
    return letters


def _out_of_order(received: list[tuple[str, int]]) -> int:
    """How many messages arrived after a later message of their group."""
    last: dict[str, int] = {}
    late = 0
    for group, n in received:
        if n < last.get(group, -1):
            late += 1
        last[group] = max(n, last.get(group, -1))
    return late


def _by_group(received: list[tuple[str, int]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for group, n in received:
        groups[group].append(n)
    return dict(groups)


def _discard(letter: DeadLetter, make_user: Any) -> None:
    """An operator discards the letter after the plan was frozen (the triage service)."""
    letters_triage(actor=make_user(Role.OPERATOR), selection=LetterFilter(ids=(letter.pk,)),
                   kind=TriageActionKind.DISCARD, reason="stale order update, superseded")  # fmt: skip


# -- SQS FIFO ------------------------------------------------------------------------------------


def _fifo_pair(harness: Any) -> tuple[str, str]:
    """A FIFO work queue whose redrive policy moves a message to a FIFO DLQ after one receive."""
    client = harness.client
    dlq_url = client.create_queue(QueueName=unique("order-dlq") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    harness.queues.append(dlq_url)
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})
    work_url = client.create_queue(
        QueueName=unique("order-work") + ".fifo",
        Attributes={"FifoQueue": "true", "RedrivePolicy": policy, "VisibilityTimeout": "1"},
    )["QueueUrl"]
    harness.queues.append(work_url)
    return work_url, dlq_url


def _fifo_target(harness: Any) -> Target:
    url = harness.client.create_queue(QueueName=unique("order-target") + ".fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    harness.queues.append(url)
    return Target(name=url)


def _send_groups(harness: Any, work_url: str, groups: int, per_group: int) -> None:
    """The producer: message n of every group, then n + 1 (groups interleaved in the queue)."""
    entries = [
        {"Id": f"g{g}n{n}", "MessageBody": json.dumps({"g": f"g{g}", "n": n}), "MessageGroupId": f"g{g}",
         "MessageDeduplicationId": f"g{g}-{n}"}
        for n in range(per_group) for g in range(groups)
    ]  # fmt: skip
    for start_at in range(0, len(entries), 10):
        response = harness.client.send_message_batch(QueueUrl=work_url, Entries=entries[start_at : start_at + 10])
        assert not response.get("Failed"), response.get("Failed")


def _dead_letter_all(harness: Any, work_url: str, total: int) -> None:
    """A consumer that fails every message: each is received once, not deleted, and the redrive
    policy moves it to the DLQ on the next receive."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        harness.client.receive_message(
            QueueUrl=work_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0
        )
        attrs = harness.client.get_queue_attributes(
            QueueUrl=work_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        if int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the work queue did not dead-letter its {total} messages")


def _receive_fifo(harness: Any, url: str, expected: int, timeout: float = 60) -> list[tuple[str, int]]:
    """A consumer of the target: receives, records (group, n) in delivery order, deletes."""
    received: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        messages = harness.client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
        ).get("Messages", [])
        for message in messages:
            body = json.loads(message["Body"])
            received.append((body["g"], body["n"]))
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            harness.client.delete_message_batch(QueueUrl=url, Entries=entries)
    return received


def _sqs_dlq_of(harness: Any, groups: int, per_group: int) -> tuple[Any, list[DeadLetter]]:
    work_url, dlq_url = _fifo_pair(harness)
    _send_groups(harness, work_url, groups, per_group)
    _dead_letter_all(harness, work_url, groups * per_group)
    dlq = harness.dlq_at(dlq_url)
    return dlq, _capture_all(dlq, groups * per_group)


def test_sqs_fifo_groups_reach_the_target_in_their_dlq_order_with_two_workers(sqs_harness, make_user, test_redis,
                                                                               client_for) -> None:  # fmt: skip
    dlq, letters = _sqs_dlq_of(sqs_harness, GROUPS, PER_GROUP)
    target = _fifo_target(sqs_harness)
    plan, _author = approved_plan(sqs_harness, dlq, target, make_user, workers=2, batch_size=10)
    items = PlanItem.objects.filter(plan=plan)
    assert items.exclude(ordering_group="").values("ordering_group").distinct().count() == GROUPS
    page = client_for(Role.APPROVER).get(f"/plans/{plan.pk}/").content.decode()
    assert "SQS FIFO: 200 letter(s) in 10 message group(s) go out in their DLQ order" in page  # before approving

    run = start(plan, make_user)
    _run_workers(run)
    run.refresh_from_db()
    assert (run.published, run.failed) == (GROUPS * PER_GROUP, 0)

    received = _receive_fifo(sqs_harness, target.name, GROUPS * PER_GROUP)
    assert len(received) == GROUPS * PER_GROUP
    assert _out_of_order(received) == 0
    assert _by_group(received) == {f"g{g}": list(range(PER_GROUP)) for g in range(GROUPS)}


def test_sqs_fifo_letter_discarded_mid_group_blocks_the_rest_until_released(sqs_harness, make_user, test_redis,
                                                                             client_for) -> None:  # fmt: skip
    dlq, letters = _sqs_dlq_of(sqs_harness, 3, 6)
    target = _fifo_target(sqs_harness)
    plan, _author = approved_plan(sqs_harness, dlq, target, make_user, workers=2, batch_size=10)
    blocker = next(x for x in letters if json.loads(bytes(x.body)) == {"g": "g1", "n": 2})
    run = start(plan, make_user)
    _discard(blocker, make_user)  # meanwhile: the run has started, its workers have not sent it yet
    _run_workers(run)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    assert f"3 letter(s) blocked behind letter {blocker.pk}" in run.stop_reason
    assert LedgerEntry.objects.get(run=run, letter=blocker).state == AttemptState.SKIPPED
    [group] = ordering.blocked_groups(run)
    assert (group.blocker_letter_id, group.waiting, group.why) == (blocker.pk, 3, "discarded after the plan was frozen")
    page = client_for(Role.VIEWER).get(f"/runs/{run.pk}/")
    link = f'<a href="/letters/{blocker.pk}/">letter {blocker.pk}</a>'
    assert f"3 letters blocked behind {link}" in page.content.decode()

    first = _receive_fifo(sqs_harness, target.name, 6 + 6 + 2)
    assert _by_group(first) == {"g0": list(range(6)), "g1": [0, 1], "g2": list(range(6))}
    assert _receive_fifo(sqs_harness, target.name, 1, timeout=3) == []  # the rest of g1 waits

    operator = client_for(Role.OPERATOR)
    assert operator.get(f"/runs/{run.pk}/release/").status_code == 405
    response = operator.post(f"/runs/{run.pk}/release/", {"group": group.group, "reason": "letter 2 was superseded"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action=AuditAction.RUN_ORDER_RELEASED, object_id=str(run.pk))
    assert event.reason == "letter 2 was superseded" and f"letter {blocker.pk}" in event.summary
    assert ordering.blocked_groups(run) == []

    services.run_resume(actor=make_user(Role.OPERATOR), run=run)
    _run_workers(run)
    run.refresh_from_db()
    assert (run.published, run.failed) == (17, 0)
    rest = _receive_fifo(sqs_harness, target.name, 3)
    assert rest == [("g1", 3), ("g1", 4), ("g1", 5)]


def test_a_letter_the_target_keeps_refusing_holds_the_rest_of_its_group(sqs_harness, make_user, test_redis) -> None:
    """The first letter of a group that fails after its attempts blocks the group; other groups go."""
    dlq, letters = _sqs_dlq_of(sqs_harness, 2, 3)
    refused = next(x for x in letters if json.loads(bytes(x.body)) == {"g": "g0", "n": 0})
    # a body SQS does not accept (U+0001): the adapter refuses it on every attempt, unaltered
    DeadLetter.objects.filter(pk=refused.pk).update(body=b'{"g": "g0", "n": 0, "x": "\x01"}')
    target = _fifo_target(sqs_harness)
    plan, _author = approved_plan(sqs_harness, dlq, target, make_user, workers=2)
    run = start(plan, make_user)
    _run_workers(run)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED and (run.published, run.failed) == (3, 1)
    [group] = ordering.blocked_groups(run)
    assert group.blocker_letter_id == refused.pk and group.waiting == 2
    assert group.why.startswith("failed: body holds U+0001")
    assert _by_group(_receive_fifo(sqs_harness, target.name, 3)) == {"g1": [0, 1, 2]}


def test_releasing_a_blocked_group_needs_the_run_capability_and_a_reason(sqs_harness, make_user, test_redis,
                                                                         client_for) -> None:  # fmt: skip
    dlq, letters = _sqs_dlq_of(sqs_harness, 1, 3)
    target = _fifo_target(sqs_harness)
    plan, _author = approved_plan(sqs_harness, dlq, target, make_user, workers=1)
    run = start(plan, make_user)
    _discard(letters[0], make_user)
    _run_workers(run, workers=1)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    [group] = ordering.blocked_groups(run)

    assert client_for(Role.VIEWER).post(f"/runs/{run.pk}/release/", {"reason": "because I say so"}).status_code == 403
    with pytest.raises(Exception, match="say why"):
        services.run_release_blocked(actor=make_user(Role.OPERATOR), run=run, reason="")
    assert ordering.blocked_groups(run) == [group]
    assert not AuditEvent.objects.filter(action=AuditAction.RUN_ORDER_RELEASED).exists()


# -- Kafka ---------------------------------------------------------------------------------------


def _keyed_dlt(harness: Any, keys: int, per_key: int, partitions: int = 2) -> tuple[Any, list[DeadLetter]]:
    """A DLT of ``partitions`` partitions that a dead-letter writer filled with keyed records:
    record n of every key, then n + 1, each key in one partition."""
    name = _topic(harness, "order-dlt", partitions)
    producer = Producer({"bootstrap.servers": harness.servers, "batch.num.messages": 1, "acks": "all",
                         "enable.idempotence": True})  # fmt: skip
    for n in range(per_key):
        for k in range(keys):
            producer.produce(name, key=f"k{k}".encode(), value=json.dumps({"g": f"k{k}", "n": n}).encode())
        producer.flush(30)
    assert producer.flush(30) == 0
    dlq = harness.dlq_at(name)
    return dlq, _capture_all(dlq, keys * per_key)


def _topic(harness: Any, prefix: str, partitions: int) -> str:
    name = unique(prefix)
    for future in harness.admin.create_topics([NewTopic(name, partitions, replication_factor=1)]).values():
        future.result(timeout=10)
    harness.topics.append(name)
    return name


def _kafka_target(harness: Any, partitions: int = 3) -> Target:
    return Target(name=_topic(harness, "order-target", partitions))


def _consume_keys(harness: Any, topic: str, expected: int, *, idle: float = 3.0) -> list[tuple[str, int]]:
    """A consumer of the target: (key, n) in the order each partition delivers them."""
    consumer = Consumer({"bootstrap.servers": harness.servers, "group.id": unique("order-reader"),
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                         "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    received: list[tuple[str, int]] = []
    deadline, last = time.monotonic() + 60, time.monotonic()
    try:
        while time.monotonic() < deadline and (len(received) < expected or time.monotonic() - last < 0.5):
            batch = [m for m in consumer.consume(500, timeout=0.5) if not m.error()]
            for message in batch:
                body = json.loads(message.value())
                assert message.key() == body["g"].encode()  # the key travels with the record
                received.append((body["g"], body["n"]))
            if batch:
                last = time.monotonic()
            elif len(received) >= expected and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return received


def test_kafka_records_of_one_key_reach_the_target_in_offset_order_with_two_workers(kafka_harness, make_user,
                                                                                     test_redis) -> None:  # fmt: skip
    dlq, _letters = _keyed_dlt(kafka_harness, GROUPS, PER_GROUP)
    target = _kafka_target(kafka_harness)
    plan, _author = approved_plan(kafka_harness, dlq, target, make_user, workers=2, batch_size=10)
    assert PlanItem.objects.filter(plan=plan).exclude(ordering_group="").values("ordering_group").distinct().count() \
        == GROUPS  # fmt: skip
    assert "Kafka: 200 keyed letter(s) in 10" in " ".join(ordering.plan_guarantee(plan).lines)

    run = start(plan, make_user)
    _run_workers(run)
    run.refresh_from_db()
    assert (run.published, run.failed) == (GROUPS * PER_GROUP, 0)

    received = _consume_keys(kafka_harness, target.name, GROUPS * PER_GROUP)
    assert len(received) == GROUPS * PER_GROUP
    assert _out_of_order(received) == 0
    assert _by_group(received) == {f"k{k}": list(range(PER_GROUP)) for k in range(GROUPS)}


def test_kafka_record_discarded_mid_key_blocks_the_rest_of_its_key_until_released(kafka_harness, make_user,
                                                                                   test_redis) -> None:  # fmt: skip
    dlq, letters = _keyed_dlt(kafka_harness, 3, 6)
    target = _kafka_target(kafka_harness)
    plan, _author = approved_plan(kafka_harness, dlq, target, make_user, workers=2, batch_size=10)
    blocker = next(x for x in letters if json.loads(bytes(x.body)) == {"g": "k1", "n": 2})
    run = start(plan, make_user)
    _discard(blocker, make_user)  # meanwhile
    _run_workers(run)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    [group] = ordering.blocked_groups(run)
    assert (group.blocker_letter_id, group.waiting) == (blocker.pk, 3)
    first = _consume_keys(kafka_harness, target.name, 14)
    assert _by_group(first) == {"k0": list(range(6)), "k1": [0, 1], "k2": list(range(6))}

    services.run_release_blocked(actor=make_user(Role.OPERATOR), run=run, group=group.group,
                                 reason="record 2 of k1 is obsolete")  # fmt: skip
    services.run_resume(actor=make_user(Role.OPERATOR), run=run)
    _run_workers(run)
    run.refresh_from_db()
    assert (run.published, run.failed) == (17, 0)
    received = _consume_keys(kafka_harness, target.name, 17)
    assert _out_of_order(received) == 0
    assert _by_group(received)["k1"] == [0, 1, 3, 4, 5]


def test_a_letter_excluded_at_the_freeze_holds_the_rest_of_its_key(kafka_harness, make_user, test_redis) -> None:
    dlq, letters = _keyed_dlt(kafka_harness, 2, 4, partitions=1)
    excluded = next(x for x in letters if json.loads(bytes(x.body)) == {"g": "k0", "n": 1})
    DeadLetter.objects.filter(pk=excluded.pk).update(disposition=Disposition.HOLD)  # held by triage: not replayed
    target = _kafka_target(kafka_harness, partitions=1)
    plan, _author = approved_plan(kafka_harness, dlq, target, make_user, workers=2)
    assert ordering.plan_guarantee(plan).held_at_freeze == 2
    run = start(plan, make_user)
    _run_workers(run)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    [group] = ordering.blocked_groups(run)
    assert group.blocker_letter_id == excluded.pk and group.why.startswith("excluded from the plan")
    assert _by_group(_consume_keys(kafka_harness, target.name, 5)) == {"k0": [0], "k1": [0, 1, 2, 3]}


def test_an_unordered_plan_has_no_held_rows(rabbit, make_user, test_redis) -> None:
    """RabbitMQ letters have no group: nothing waits, and the plan page says one worker keeps their order."""
    from tests.recovery.replay.helpers import captured_letters

    dlq, _letters = captured_letters(rabbit, 5)
    plan, _author = approved_plan(rabbit, dlq, rabbit.target(), make_user, workers=2)
    assert not PlanItem.objects.filter(plan=plan).exclude(ordering_group="").exists()
    assert "this plan has 2 workers, so their order is not kept" in " ".join(ordering.plan_guarantee(plan).lines)
    run = start(plan, make_user)
    assert not LedgerEntry.objects.filter(run=run, lease_owner="order:held").exists()
    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED  # no verification step
    assert ReplayRun.objects.get(pk=run.pk).published == 5


def test_rabbitmq_letters_go_out_in_capture_order_with_one_worker(rabbit, make_user, test_redis) -> None:
    from recovery.brokers.registry import adapter_for
    from tests.recovery.replay.helpers import captured_letters

    dlq, _letters = captured_letters(rabbit, 30)
    target = rabbit.target()
    plan, _author = approved_plan(rabbit, dlq, target, make_user, workers=1, batch_size=7)
    assert "with 1 worker (this plan's setting)" in " ".join(ordering.plan_guarantee(plan).lines)
    run = start(plan, make_user)
    assert Worker(run.pk, 0).run() == RunState.COMPLETED_NOT_VERIFIED  # no verification step
    adapter = adapter_for(rabbit.broker, timeout=10)
    try:
        received = adapter.receive(rabbit.target_address(target), max_messages=30, wait_seconds=2)
        adapter.remove(rabbit.target_address(target), received)
    finally:
        adapter.close()
    assert [int(message.headers["x-seq"]) for message in received] == list(range(30))


def test_freeze_ranks_the_letters_of_a_group_by_their_sequence_number(sqs_harness, make_user, test_redis) -> None:
    dlq, letters = _sqs_dlq_of(sqs_harness, 2, 5)
    plan, _author = approved_plan(sqs_harness, dlq, _fifo_target(sqs_harness), make_user)
    items = PlanItem.objects.filter(plan=plan).select_related("letter").order_by("ordering_group", "ordering_position")
    ranked: dict[str, list[int]] = defaultdict(list)
    for item in items:
        ranked[item.ordering_group].append(int(item.letter.properties["SequenceNumber"]))
        assert item.ordering_position == len(ranked[item.ordering_group])
    assert all(sequence == sorted(sequence) for sequence in ranked.values())
    assert [json.loads(bytes(i.letter.body))["n"] for i in items] == [0, 1, 2, 3, 4] * 2
    # items (and so ledger rows, claimed in id order) are frozen in the DLQ's order
    by_id = PlanItem.objects.filter(plan=plan).select_related("letter").order_by("pk")
    sequence = [int(item.letter.properties["SequenceNumber"]) for item in by_id]
    assert sequence == sorted(sequence)


def test_letting_the_next_letter_of_a_group_go_uses_index_lookups_after_the_statistics_change(make_user) -> None:
    """Recording a batch published also unlocks each group's next row (recovery.replay.ordering):
    with the claim's nested-loop plan that is a few index lookups per row, never a scan of the
    run's ledger or of the plan's items, whatever ANALYZE last saw."""
    from datetime import UTC, datetime

    from recovery.models import ORDER_HELD
    from recovery.replay.ledger import CLAIM_PLAN
    from tests.factories import LedgerEntryFactory, PlanItemFactory, ReplayRunFactory

    run = ReplayRunFactory()
    rows = []
    for group in range(5):
        for position in range(1, 11):
            item = PlanItemFactory(plan=run.plan, ordering_group=f"sqs-fifo:{group}", ordering_position=position)
            held = {"lease_owner": ORDER_HELD, "lease_expires_at": datetime(9999, 1, 1, tzinfo=UTC)}
            rows.append(LedgerEntryFactory(run=run, item=item, **(held if position > 1 else {})))
    firsts = [row.pk for row in rows[::10]]
    LedgerEntry.objects.filter(pk__in=firsts).update(state=AttemptState.PUBLISHED)
    with transaction.atomic(), connection.cursor() as cursor:  # SET LOCAL holds inside a transaction, as it runs
        cursor.execute("ANALYZE recovery_ledgerentry")
        cursor.execute("ANALYZE recovery_planitem")
        cursor.execute(CLAIM_PLAN)
        cursor.execute("EXPLAIN (FORMAT TEXT) " + ordering.UNLOCK_NEXT_SQL, [firsts, run.pk, ORDER_HELD])
        plan = "\n".join(row[0] for row in cursor.fetchall())
        assert "Seq Scan" not in plan and "Hash" not in plan, plan
        assert ordering.unlock_successors(cursor, run.pk, firsts) == 5
    unlocked = LedgerEntry.objects.filter(run=run, state=AttemptState.PENDING).exclude(lease_owner=ORDER_HELD)
    assert sorted(unlocked.values_list("item__ordering_position", flat=True)) == [2] * 5
