"""A capture pass reads until the DLQ is empty or its limit, and says what it left (issue 15,
part 7): an SQS FIFO DLQ, whose message groups hide while a batch of theirs is in flight, is
captured in one pass; a pass stopped by its limit says "N remain", not "Succeeded"; every letter
records its position in the DLQ."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from django.urls import reverse

from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import AuditEvent, CapturePass, CaptureTrigger, DeadLetter, JobState
from recovery.permissions import Role
from tests.namespace import unique

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

GROUPS, PER_GROUP = 10, 20


def _capture(dlq, **kwargs) -> CapturePass:
    requested = capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI)
    return capture_pass_run(pass_id=requested.pk, **kwargs)


def _fifo_pair(sqs_harness) -> tuple[str, str]:
    """A FIFO work queue whose redrive policy moves a message to a FIFO DLQ after one receive."""
    client = sqs_harness.client
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dlq_url = client.create_queue(QueueName=f"{unique('fifo-dlq')}.fifo", Attributes=fifo)["QueueUrl"]
    sqs_harness.queues.append(dlq_url)
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})
    work_url = client.create_queue(
        QueueName=f"{unique('fifo-work')}.fifo", Attributes={**fifo, "RedrivePolicy": redrive}
    )["QueueUrl"]
    sqs_harness.queues.append(work_url)
    return work_url, dlq_url


def _dead_letter_by_redrive(sqs_harness, work_url: str, dlq_url: str) -> None:
    """Send GROUPS x PER_GROUP messages, groups interleaved, then fail them the way a consumer does:
    receive without deleting until SQS moves each one to the DLQ (maxReceiveCount 1)."""
    client = sqs_harness.client
    sends = [(g, n) for n in range(PER_GROUP) for g in range(GROUPS)]
    for start in range(0, len(sends), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps({"group": f"g{g}", "n": n}),
                "MessageGroupId": f"g{g}",
                "MessageDeduplicationId": f"g{g}-{n}",
            }
            for i, (g, n) in enumerate(sends[start : start + 10])
        ]
        assert not client.send_message_batch(QueueUrl=work_url, Entries=entries).get("Failed")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        client.receive_message(QueueUrl=work_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        attributes = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        if int(attributes["ApproximateNumberOfMessages"]) == GROUPS * PER_GROUP:
            return
    raise AssertionError("the redrive policy did not move every message to the DLQ")


def test_a_fifo_dlq_filled_by_redrive_is_captured_in_one_pass_in_order_per_group(sqs_harness) -> None:
    """A FIFO group with a message in flight returns nothing: a pass that read while its last
    batch was still unremoved once saw an "empty" DLQ after 40 of 100 messages and said Succeeded."""
    work_url, dlq_url = _fifo_pair(sqs_harness)
    _dead_letter_by_redrive(sqs_harness, work_url, dlq_url)
    dlq = sqs_harness.dlq_at(dlq_url, capture_batch_size=100)

    done = _capture(dlq)

    assert done.state == JobState.SUCCEEDED, done.error
    assert (done.received, done.captured, done.removed) == (GROUPS * PER_GROUP,) * 3
    assert done.remaining == 0 and done.outcome == "Succeeded"
    assert sqs_harness.still_on_broker(dlq) == 0
    by_group: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for body, position in DeadLetter.objects.filter(dlq=dlq).values_list("body", "position"):
        message = json.loads(bytes(body))
        assert position is not None
        by_group[message["group"]].append((position, message["n"]))
    assert len(by_group) == GROUPS
    for group, letters in by_group.items():
        in_dlq_order = [n for _, n in sorted(letters)]
        assert in_dlq_order == list(range(PER_GROUP)), f"group {group} out of order: {in_dlq_order}"


def test_a_pass_stopped_by_its_limit_says_how_many_remain(harness, settings, client_for) -> None:
    settings.RECOVERY_CAPTURE_MAX_PER_PASS = 5
    dlq = harness.make_dlq(capture_batch_size=5, capture_interval=3600)
    harness.fill(dlq, [(f'{{"n": {i}}}'.encode(), {"x-seq": str(i)}) for i in range(12)])

    first = _capture(dlq)

    assert first.state == JobState.SUCCEEDED, first.error
    assert (first.captured, first.removed, first.limit_reached, first.remaining) == (5, 5, True, 7)
    assert first.outcome == "7 remain (limit reached)"
    event = AuditEvent.objects.get(
        object_type="recovery.capturepass", object_id=str(first.pk), action="capture.finished"
    )
    assert "7 remain" in event.summary and event.after["remaining"] == 7
    dlq.refresh_from_db()
    assert dlq.next_capture_at <= first.finished_at, "a scheduled DLQ with messages left is due again at once"
    viewer = client_for(Role.VIEWER)
    html = viewer.get(reverse("dlq-detail", args=[dlq.pk])).content.decode()
    assert "7 remain (limit reached)" in html and 'data-testid="last-pass-remaining"' in html
    assert 'data-testid="last-pass-remaining">7 remain<' in viewer.get(reverse("overview")).content.decode()

    second, third = _capture(dlq), _capture(dlq)

    assert (second.captured, second.remaining, second.outcome) == (5, 2, "2 remain (limit reached)")
    assert (third.captured, third.remaining, third.limit_reached, third.outcome) == (2, 0, False, "Succeeded")
    assert DeadLetter.objects.filter(dlq=dlq).count() == 12


def test_each_letter_records_its_position_in_the_dlq(harness, client_for) -> None:
    """The position a later replay keeps the original order by: the broker's own (Kafka offset,
    SQS FIFO SequenceNumber) or, where the broker numbers nothing, the order capture read them in,
    continued across passes. RabbitMQ and Kafka hand a queue/partition out in order."""
    dlq = harness.make_dlq(capture_batch_size=3)
    harness.fill(dlq, [(f'{{"n": {i}}}'.encode(), {"x-seq": str(i)}) for i in range(4)])
    assert _capture(dlq).captured == 4
    harness.fill(dlq, [(f'{{"n": {i}}}'.encode(), {"x-seq": str(i)}) for i in range(4, 8)])
    assert _capture(dlq).captured == 4

    letters = list(DeadLetter.objects.filter(dlq=dlq).order_by("position"))
    positions = [letter.position for letter in letters]
    assert None not in positions and len(set(positions)) == 8
    if harness.kind == "kafka":
        assert positions == list(range(8)), "the Kafka offset"
    if harness.kind in ("kafka", "rabbitmq"):
        assert [json.loads(bytes(letter.body))["n"] for letter in letters] == list(range(8))
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letters[-1].pk])).content.decode()
    assert f'data-testid="position">{letters[-1].position}<' in html
