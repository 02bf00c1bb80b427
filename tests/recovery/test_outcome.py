"""Recovery outcomes you can trust (issue 15 parts 1 and 2), on the real brokers: a letter moves
captured -> in a plan -> replaying -> replayed -> resolved or returned, each move audited and on
its page's timeline; a replayed message dead-lettered again comes back as a new letter linked to
the original and reopens its failure group; a letter replayed once is left out of later plans
unless a plan says "replay again", and every replay of it carries the same idempotency key while
SQS FIFO deduplicates on the per-plan replay id; lists show open work by default."""

from __future__ import annotations

import pytest
from django.urls import reverse

from recovery.brokers.base import Target
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.classification.services import letters_classify
from recovery.errors import InvalidInput
from recovery.letters import lifecycle
from recovery.models import (
    AttemptState,
    AuditAction,
    AuditEvent,
    CaptureTrigger,
    DeadLetter,
    DeadLetterState,
    Disposition,
    FingerprintGroup,
    LedgerEntry,
    PlanItem,
    ReplayRun,
    RunState,
)
from recovery.permissions import Role
from recovery.replay import freeze, services
from recovery.replay.engine import Worker
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.factories import DeadLetterFactory, DeadLetterQueueFactory
from tests.namespace import unique
from tests.recovery.replay.conftest import chk_http  # noqa: F401 - a fixture
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

S = DeadLetterState


def _states(dlq) -> list[str]:
    return sorted(set(DeadLetter.objects.filter(dlq=dlq).values_list("state", flat=True)))


def _header(message, name: str) -> str:
    value = message.headers.get(name)
    return value.get("StringValue") if isinstance(value, dict) else value


# -- replay -> replayed -> resolved ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_run_moves_its_letters_to_replayed_and_an_unverified_run_leaves_them_there(
    harness,
    make_user,
    test_redis,
    chk_http,  # noqa: F811 - the imported fixture
    monkeypatch,
) -> None:
    monkeypatch.setattr(lifecycle, "REPLAYED_CHUNK", 4)  # 6 letters: two chunks, each audited
    dlq, _letters = captured_letters(harness, 6)
    assert _states(dlq) == [S.CAPTURED]
    failing = [{"step": "http_check", "url": chk_http.url("/status/500")}]
    plan, _author = approved_plan(harness, dlq, harness.target(), make_user, verifications=failing)
    assert _states(dlq) == [S.PLANNED]

    run = start(plan, make_user)
    assert _states(dlq) == [S.PLANNED], "while the run sends, its letters stay in the plan (no pass over them)"
    assert Worker(run.pk, 0).run() == RunState.VERIFICATION_FAILED

    assert _states(dlq) == [S.REPLAYED], "published with confirmation, but not verified: not resolved"
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.PUBLISHED}
    replayed = AuditEvent.objects.filter(action=AuditAction.LETTERS_REPLAYED, object_id=str(run.pk))
    assert sorted(event.after["letters"] for event in replayed) == [2, 4]


# Replayed -> resolved, only after a later capture pass and the broker's positive signal, is proved
# on each broker by tests/recovery/replay/test_evidence.py
# (test_a_replay_is_verified_only_after_a_later_capture_pass_and_the_positive_signal).


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_letters_of_a_rejected_or_cancelled_plan_are_open_work_again(rabbit, make_user) -> None:
    dlq, letters = captured_letters(rabbit, 3)
    plan, author = approved_plan(rabbit, dlq, rabbit.target(), make_user)
    assert _states(dlq) == [S.PLANNED]
    assert not LetterFilter(work="open", dlq=(dlq.pk,)).apply().exists(), "in a plan: not open work"

    services.plan_reject(actor=make_user(Role.APPROVER), plan=plan, comment="the consumer is not fixed yet")
    assert _states(dlq) == [S.CAPTURED]

    again = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="second try")
    again = services.plan_update(
        actor=author,
        plan=again,
        changes={"target_broker": rabbit.broker, "target_routing_key": rabbit.target().routing_key},
    )
    again = services.plan_submit(actor=author, plan=again)
    assert _states(dlq) == [S.PLANNED]
    services.plan_cancel(actor=author, plan=again, reason="wrong target")
    assert _states(dlq) == [S.CAPTURED]


# -- returned: a replayed message that comes back ---------------------------------------------


def _reject_all(rabbit, queue: str, count: int) -> int:
    """The target's consumer fails every message: RabbitMQ dead-letters each back to the DLQ."""
    conn, channel = rabbit._channel()
    rejected = 0
    try:
        for method, _props, _body in channel.consume(queue, inactivity_timeout=5):
            if method is None:
                break
            channel.basic_reject(method.delivery_tag, requeue=False)
            rejected += 1
            if rejected == count:
                break
        channel.cancel()
    finally:
        conn.close()
    return rejected


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_replayed_message_dead_lettered_again_comes_back_linked_and_reopens_its_group(
    rabbit, make_user, client_for, test_redis
) -> None:
    dlq, letters = captured_letters(rabbit, 3)
    DeadLetter.objects.filter(dlq=dlq).update(classified_by="")  # classified for real: fingerprint and group
    letters_classify(dlq=dlq)
    DeadLetter.objects.filter(dlq=dlq).update(disposition=Disposition.REPLAY)
    fingerprint = DeadLetter.objects.get(pk=letters[0].pk).fingerprint
    assert fingerprint
    work = unique("work", 8)
    conn, channel = rabbit._channel()
    channel.queue_declare(work, durable=True, arguments={"x-dead-letter-exchange": "",
                                                         "x-dead-letter-routing-key": dlq.address})  # fmt: skip
    conn.close()
    rabbit.queues.append(work)
    plan, _ = approved_plan(rabbit, dlq, Target(name="", routing_key=work), make_user)
    run = start(plan, make_user)
    Worker(run.pk, 0).run()
    originals = {letter.pk for letter in letters}
    assert _states(dlq) in ([S.RESOLVED], [S.REPLAYED])
    groups = client_for(Role.VIEWER).get(reverse("groups")).content.decode()
    assert fingerprint not in groups, "no open letter left: the group leaves the default groups page"

    assert _reject_all(rabbit, work, 3) == 3
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    letters_classify(dlq=dlq)

    back = list(DeadLetter.objects.filter(dlq=dlq).exclude(pk__in=originals).order_by("id"))
    assert len(back) == 3
    items = {item.letter_id: item.replay_id for item in PlanItem.objects.filter(plan=plan)}
    assert {letter.returned_from_id for letter in back} == originals
    for letter in back:
        assert letter.replay_id == items[letter.returned_from_id], "linked through its x-replay-id"
        assert letter.state == S.CAPTURED, "the message that came back is open work"
    assert _states(dlq) == [S.CAPTURED, S.RETURNED]
    assert set(DeadLetter.objects.filter(pk__in=originals).values_list("state", flat=True)) == {S.RETURNED}
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.REDEADLETTERED}
    assert ReplayRun.objects.get(pk=run.pk).redeadlettered == 3
    assert FingerprintGroup.objects.get(fingerprint=fingerprint).reopened_at is not None
    event = AuditEvent.objects.get(action=AuditAction.LETTERS_RETURNED)
    assert sorted(original for _new, original in event.after["returned"]) == sorted(originals)

    viewer = client_for(Role.VIEWER)
    groups = viewer.get(reverse("groups")).content.decode()
    assert fingerprint in groups and "reopened" in groups
    original_page = viewer.get(reverse("letter-detail", args=[letters[0].pk])).content.decode()
    timeline = original_page.split('data-testid="timeline"', 1)[1]
    for step in ("In a plan", "Replaying", "Replayed", "Returned"):
        assert f"<strong>{step}" in timeline, step
    assert (
        timeline.index("<strong>In a plan")
        < timeline.index("<strong>Replaying")
        < timeline.index("<strong>Replayed")
        < timeline.index("<strong>Returned")
    )
    assert 'data-testid="returns"' in original_page
    new = next(letter for letter in back if letter.returned_from_id == letters[0].pk)
    new_page = viewer.get(reverse("letter-detail", args=[new.pk])).content.decode()
    assert 'data-testid="returned-from"' in new_page and f"letter {letters[0].pk}" in new_page
    assert "<strong>Came back from a replay" in new_page


# -- identity across plans ---------------------------------------------------------------------


def _fifo_queue(sqs_harness) -> str:
    url = sqs_harness.client.create_queue(QueueName=unique("fifo", 8) + ".fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    sqs_harness.queues.append(url)
    return url


def _receive_all(sqs_harness, url: str, expected: int) -> list[dict]:
    got: list[dict] = []
    for _ in range(20):
        response = sqs_harness.client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"],
            AttributeNames=["All"],
        )  # fmt: skip
        for message in response.get("Messages", []):
            got.append(message)
            sqs_harness.client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if len(got) >= expected:
            break
    return got


def _attribute(message: dict, name: str) -> str:
    return message["MessageAttributes"][name]["StringValue"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_second_plan_leaves_replayed_letters_out_and_replay_again_resends_them_under_the_same_key(
    sqs_harness, make_user, client_for, test_redis
) -> None:
    dlq, letters = captured_letters(sqs_harness, 4)
    fifo = _fifo_queue(sqs_harness)
    first, author = approved_plan(sqs_harness, dlq, Target(name=fifo), make_user)
    Worker(start(first, make_user).pk, 0).run()
    sent_first = _receive_all(sqs_harness, fifo, 4)
    assert len(sent_first) == 4

    second = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="again")
    # no verification step: this test is about identity, and the default step would wait for
    # evidence no consumer gives here (up to its settle time, 300 s)
    second = services.plan_update(actor=author, plan=second, changes={"target_broker": sqs_harness.broker,
                                                                      "target_address": fifo,
                                                                      "verifications": []})  # fmt: skip
    dry = freeze.dry_run(second)
    assert (dry.included, dry.excluded) == (0, 4)
    assert dry.exclusions == {freeze.ALREADY_REPLAYED: 4}
    with pytest.raises(InvalidInput, match="already replayed"):
        services.plan_submit(actor=author, plan=second)
    with pytest.raises(InvalidInput, match="say why"):
        services.plan_update(actor=author, plan=second, changes={"replay_again": True})

    reason = "the consumer fix for ORD-17 is deployed now"
    second = services.plan_update(actor=author, plan=second,
                                  changes={"replay_again": True, "replay_again_reason": reason})  # fmt: skip
    assert freeze.dry_run(second).included == 4
    second = services.plan_submit(actor=author, plan=second)
    assert PlanItem.objects.filter(plan=second, replay_again=True).count() == 4
    approver = client_for(Role.APPROVER)
    page = approver.get(reverse("plan-detail", args=[second.pk])).content.decode()
    shown = page.split('data-testid="plan-replay-again"', 1)[1].split("</dd>", 1)[0]
    assert "replay again" in shown and reason in shown and "4 of them" in shown
    second = services.plan_approve(actor=make_user(Role.APPROVER), plan=second)
    Worker(start(second, make_user).pk, 0).run()

    sent_again = _receive_all(sqs_harness, fifo, 4)
    assert len(sent_again) == 4, "a deliberate replay inside the five-minute window is not dropped by FIFO dedup"
    first_ids = {_attribute(m, "x-idempotency-key"): m for m in sent_first}
    again_ids = {_attribute(m, "x-idempotency-key"): m for m in sent_again}
    assert len(first_ids) == 4 and set(first_ids) == set(again_ids), "one idempotency key per letter, every plan"
    for key, message in again_ids.items():
        earlier = first_ids[key]
        assert message["Body"] == earlier["Body"]
        assert _attribute(message, "x-replay-id") != _attribute(earlier, "x-replay-id")
        assert message["Attributes"]["MessageDeduplicationId"] == _attribute(message, "x-replay-id")
        assert earlier["Attributes"]["MessageDeduplicationId"] == _attribute(earlier, "x-replay-id")
    letter_page = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letters[0].pk])).content.decode()
    shown_key = letter_page.split('data-testid="idempotency-key">', 1)[1].split("<", 1)[0]
    assert shown_key in first_ids


# -- open work by default ----------------------------------------------------------------------


@pytest.mark.django_db
def test_lists_groups_the_overview_and_the_dlq_page_show_open_work_by_default(client_for) -> None:
    dlq = DeadLetterQueueFactory(name=unique("open-dlq", 6))
    open_letter = DeadLetterFactory(dlq=dlq, state=S.CAPTURED, fingerprint="a" * 64)
    done = [DeadLetterFactory(dlq=dlq, state=state, fingerprint="b" * 64)
            for state in (S.RESOLVED, S.DISCARDED, S.REPLAYED, S.HELD)]  # fmt: skip
    for fingerprint, sample in (("a" * 64, open_letter), ("b" * 64, done[0])):
        FingerprintGroup.objects.create(
            fingerprint=fingerprint,
            error_class=f"Err{fingerprint[0]}",
            letter_count=1,
            first_seen=sample.captured_at,
            last_seen=sample.captured_at,
        )
    viewer = client_for(Role.VIEWER)

    def rows(page: str) -> set[int]:
        return {letter.pk for letter in [open_letter, *done] if f'data-letter="{letter.pk}"' in page}

    listed = viewer.get(reverse("dead-letters"), {"dlq": dlq.pk}).content.decode()
    assert rows(listed) == {open_letter.pk}
    everything = viewer.get(reverse("dead-letters"), {"dlq": dlq.pk, "work": "all"}).content.decode()
    assert rows(everything) == {open_letter.pk, *(letter.pk for letter in done)}
    closed = viewer.get(reverse("dead-letters"), {"dlq": dlq.pk, "work": "closed"}).content.decode()
    assert rows(closed) == {done[0].pk, done[1].pk, done[3].pk}

    dlq_page = viewer.get(reverse("dlq-detail", args=[dlq.pk])).content.decode()
    assert rows(dlq_page) == {open_letter.pk}
    assert rows(viewer.get(reverse("dlq-detail", args=[dlq.pk]), {"work": "all"}).content.decode()) == {
        open_letter.pk,
        *(letter.pk for letter in done),
    }

    groups = viewer.get(reverse("groups")).content.decode()
    assert "a" * 64 in groups and "b" * 64 not in groups
    assert "b" * 64 in viewer.get(reverse("groups"), {"work": "all"}).content.decode()

    overview = viewer.get(reverse("overview")).content.decode()
    row = overview.split(f'data-dlq="{dlq.name}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-open="1"' in row and 'data-count="5"' in row


def test_the_idempotency_key_is_the_one_the_message_carries_else_derived_from_the_letters_identity() -> None:
    from recovery.letters.identity import idempotency_key
    from recovery.replay.messages import LetterContent

    def letter(headers: dict, identity: str = "orders.DLT/0/42") -> LetterContent:
        return LetterContent(b"{}", headers, {}, "application/json", "", identity)

    derived = idempotency_key(letter({}))
    assert derived.startswith("dl-") and derived == idempotency_key(letter({"x-seq": "1"}))
    assert derived != idempotency_key(letter({}, identity="orders.DLT/0/43"))
    assert idempotency_key(letter({"x-idempotency-key": "order-17"})) == "order-17"
    assert idempotency_key(letter({"x-idempotency-key": {"DataType": "String", "StringValue": "order-18"}})) == (
        "order-18"
    )
