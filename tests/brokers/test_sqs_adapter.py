"""SqsAdapter against the real local LocalStack (no mocks). Every test makes its own queues with
a unique suffix and deletes them afterwards."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from recovery.brokers.base import BrokerError, DlqAddress, OutgoingMessage, ReceivedMessage, Target
from recovery.brokers.sqs import SqsAdapter
from recovery.models import BrokerKind
from tests.factories import LocalBrokerFactory
from tests.namespace import unique


@pytest.fixture
def sqs() -> Iterator[Any]:
    """A raw boto3 client for arranging and checking what the adapter cannot (or should not) do."""
    client = boto3.client(
        "sqs",
        endpoint_url=os.environ["LOCAL_SQS_ENDPOINT_URL"],
        region_name=os.environ.get("LOCAL_SQS_REGION", "us-east-1"),
        aws_access_key_id=os.environ["LOCAL_SQS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["LOCAL_SQS_SECRET_ACCESS_KEY"],
    )
    yield client
    client.close()


@pytest.fixture
def make_queue(sqs: Any) -> Iterator[Callable[..., str]]:
    """Create a uniquely named queue (``.fifo`` when fifo=True) and return its URL."""
    created: list[str] = []
    run = unique("t-sqs")

    def make(label: str = "q", *, fifo: bool = False, **attributes: str) -> str:
        name = f"{run}-{label}" + (".fifo" if fifo else "")
        if fifo:
            attributes["FifoQueue"] = "true"
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        created.append(url)
        return url

    yield make
    for url in created:
        with contextlib.suppress(sqs.exceptions.QueueDoesNotExist):
            sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def make_adapter() -> Iterator[Callable[..., SqsAdapter]]:
    adapters: list[SqsAdapter] = []

    def make(*, timeout: float = 5.0, **options: Any) -> SqsAdapter:
        adapter = SqsAdapter(LocalBrokerFactory.build(kind=BrokerKind.SQS, extra_options=options), timeout=timeout)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


def _arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _receive_all(adapter: SqsAdapter, url: str, expected: int, *, deadline: float = 20.0) -> list[ReceivedMessage]:
    got: list[ReceivedMessage] = []
    end = time.monotonic() + deadline
    while len(got) < expected and time.monotonic() < end:
        got += adapter.receive(DlqAddress(url), max_messages=expected - len(got), wait_seconds=1)
    return got


def test_it_round_trips_body_and_attributes(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    body = "héllo wörld ✓ 𝄞 日本語 — \t\n".encode()
    blob = b"\x00\xff\xferaw"
    [result] = adapter.publish(
        Target(url),
        [
            OutgoingMessage(
                body=body,
                headers={
                    "kind": "order.created",
                    "note": "ünïcödé ✓",
                    "empty": "",
                    "count": {"DataType": "Number", "StringValue": "42"},
                    "blob": {"DataType": "Binary", "BinaryValue": {"$base64": base64.b64encode(blob).decode()}},
                    "text-blob": {"DataType": "Binary", "BinaryValue": "plain"},
                },
            )
        ],
    )
    assert result.confirmed and result.index == 0 and result.broker_message_id

    [message] = adapter.receive(DlqAddress(url), max_messages=1, wait_seconds=2)

    assert message.identity == result.broker_message_id
    assert message.body == body
    assert message.headers == {
        "kind": {"DataType": "String", "StringValue": "order.created"},
        "note": {"DataType": "String", "StringValue": "ünïcödé ✓"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": {"$base64": base64.b64encode(blob).decode()}},
        "text-blob": {"DataType": "Binary", "BinaryValue": "plain"},
    }
    assert message.properties["ApproximateReceiveCount"] == "1"
    assert message.properties["SentTimestamp"].isdigit()
    assert message.properties["md5_of_body"] == hashlib.md5(body).hexdigest()  # noqa: S324 - SQS's checksum
    assert message.properties["queue_url"] == url
    json.dumps(message.headers), json.dumps(message.properties)  # JSON-safe throughout


def test_it_gathers_more_than_ten_messages_by_looping(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    results = adapter.publish(Target(url), [OutgoingMessage(body=f"m{i}".encode()) for i in range(25)])
    assert all(r.confirmed for r in results)

    got = adapter.receive(DlqAddress(url), max_messages=40, wait_seconds=1)

    assert len(got) == 25
    assert {m.identity for m in got} == {r.broker_message_id for r in results}


def test_it_removes_messages_for_good(make_queue, make_adapter) -> None:
    url = make_queue(VisibilityTimeout="2")
    adapter = make_adapter(visibility_timeout=2)
    adapter.publish(Target(url), [OutgoingMessage(body=f"m{i}".encode()) for i in range(12)])
    got = _receive_all(adapter, url, 12)
    assert len(got) == 12

    adapter.remove(DlqAddress(url), got)

    assert adapter.depth(DlqAddress(url)) == 0
    time.sleep(3)  # past the visibility timeout: a message not deleted would be back by now
    assert adapter.receive(DlqAddress(url), max_messages=10, wait_seconds=1) == []


def test_remove_names_each_message_it_could_not_delete(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    forged = ReceivedMessage(identity="msg-123", body=b"", headers={}, properties={}, receipt="not-a-handle")

    with pytest.raises(BrokerError) as caught:
        adapter.remove(DlqAddress(url), [forged])

    assert "msg-123" in str(caught.value) and "ReceiptHandleIsInvalid" in str(caught.value)
    assert "visible again" in str(caught.value)
    assert caught.value.permanent


def test_it_releases_messages_at_once(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter(visibility_timeout=120)
    adapter.publish(Target(url), [OutgoingMessage(body=f"m{i}".encode()) for i in range(3)])
    first = _receive_all(adapter, url, 3)
    assert adapter.receive(DlqAddress(url), max_messages=3, wait_seconds=0) == []

    adapter.release(DlqAddress(url), first)

    again = adapter.receive(DlqAddress(url), max_messages=3, wait_seconds=1)
    assert {m.identity for m in again} == {m.identity for m in first}
    assert {m.properties["ApproximateReceiveCount"] for m in again} == {"2"}


def test_close_gives_back_messages_still_in_flight(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter(visibility_timeout=120)
    adapter.publish(Target(url), [OutgoingMessage(body=b"held")])
    [held] = adapter.receive(DlqAddress(url), max_messages=1, wait_seconds=1)

    adapter.close()

    [back] = make_adapter().receive(DlqAddress(url), max_messages=1, wait_seconds=1)
    assert back.identity == held.identity


def test_it_reads_a_real_redrive_with_its_failure_metadata(sqs, make_queue, make_adapter) -> None:
    dlq = make_queue("dlq")
    policy = json.dumps({"deadLetterTargetArn": _arn(sqs, dlq), "maxReceiveCount": "1"})
    work = make_queue("work", RedrivePolicy=policy)
    sent = sqs.send_message(
        QueueUrl=work,
        MessageBody="poison",
        MessageAttributes={"error": {"DataType": "String", "StringValue": "ValueError: bad"}},
    )
    for _ in range(3):  # a consumer that fails without deleting; SQS moves it after maxReceiveCount
        sqs.receive_message(QueueUrl=work, VisibilityTimeout=0, WaitTimeSeconds=0)

    [message] = _receive_all(make_adapter(), dlq, 1)

    assert message.identity == sent["MessageId"]
    assert message.body == b"poison"
    assert message.headers["error"] == {"DataType": "String", "StringValue": "ValueError: bad"}
    assert int(message.properties["ApproximateReceiveCount"]) >= 1
    # LocalStack sets DeadLetterQueueSourceArn as AWS does (moto and fauxqs do not).
    assert message.properties["DeadLetterQueueSourceArn"] == _arn(sqs, work)


def test_publish_confirms_each_message_with_its_message_id(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    results = adapter.publish(Target(url), [OutgoingMessage(body=f"m{i}".encode()) for i in range(23)])

    assert [r.index for r in results] == list(range(23))
    assert all(r.confirmed and not r.error for r in results)
    assert len({r.broker_message_id for r in results}) == 23
    received = _receive_all(adapter, url, 23)
    assert {m.identity: m.body for m in received} == {r.broker_message_id: f"m{r.index}".encode() for r in results}


def test_publish_splits_batches_by_payload_size(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter(max_batch_bytes=1000)
    results = adapter.publish(Target(url), [OutgoingMessage(body=b"x" * 600) for _ in range(3)])

    assert [r.confirmed for r in results] == [True, True, True]
    assert len(_receive_all(adapter, url, 3)) == 3


def test_fifo_publish_deduplicates_on_the_deduplication_id(make_queue, make_adapter) -> None:
    url = make_queue(fifo=True)
    adapter = make_adapter()
    message = OutgoingMessage(body=b"once", properties={"message_group_id": "g1", "deduplication_id": "replay-1"})

    first = adapter.publish(Target(url), [message])
    second = adapter.publish(Target(url), [message])

    assert first[0].confirmed and second[0].confirmed
    got = adapter.receive(DlqAddress(url), max_messages=10, wait_seconds=1)
    assert [m.body for m in got] == [b"once"]
    assert got[0].properties["MessageGroupId"] == "g1"
    assert got[0].properties["MessageDeduplicationId"] == "replay-1"


def test_a_fifo_message_without_a_group_fails_alone(make_queue, make_adapter) -> None:
    url = make_queue(fifo=True)
    adapter = make_adapter()
    results = adapter.publish(
        Target(url),
        [
            OutgoingMessage(body=b"a", properties={"message_group_id": "g", "deduplication_id": "d1"}),
            OutgoingMessage(body=b"b", properties={"deduplication_id": "d2"}),
            OutgoingMessage(body=b"c", headers={"x-replay-id": "r3"}, properties={"message_group_id": "g"}),
        ],
    )

    assert [(r.index, r.confirmed) for r in results] == [(0, True), (1, False), (2, True)]
    assert "message_group_id" in results[1].error
    got = _receive_all(adapter, url, 2)
    assert [m.properties["MessageDeduplicationId"] for m in got] == ["d1", "r3"]


def test_a_fifo_message_sqs_rejects_does_not_fail_the_others(make_queue, make_adapter) -> None:
    # No deduplication id and no content-based dedupe: LocalStack rejects the whole batch for it.
    url = make_queue(fifo=True)
    adapter = make_adapter()
    results = adapter.publish(
        Target(url),
        [
            OutgoingMessage(body=b"a", properties={"message_group_id": "g", "deduplication_id": "d1"}),
            OutgoingMessage(body=b"b", properties={"message_group_id": "g"}),
        ],
    )

    assert [r.confirmed for r in results] == [True, False]
    assert "Deduplication" in results[1].error


def test_a_body_sqs_cannot_carry_is_refused_not_mangled(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    results = adapter.publish(
        Target(url),
        [OutgoingMessage(body=b"\xff\xfe binary"), OutgoingMessage(body=b"fine"), OutgoingMessage(body=b"nul\x00")],
    )

    assert [r.confirmed for r in results] == [False, True, False]
    assert "not valid UTF-8" in results[0].error and "not sent" in results[0].error
    assert "U+0000" in results[2].error
    assert [m.body for m in _receive_all(adapter, url, 1)] == [b"fine"]


def test_more_than_ten_headers_keep_the_replay_headers_as_attributes(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    replay = {
        "x-replay-id": "r-1",
        "x-original-message-id": "m-1",
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    }
    others = {f"h{i}": f"v{i}" for i in range(9)}
    adapter.publish(Target(url), [OutgoingMessage(body=b"x", headers={**others, **replay})])

    [message] = _receive_all(adapter, url, 1)

    assert set(message.headers) == {*replay, "x-original-headers"}
    assert {k: v["StringValue"] for k, v in message.headers.items() if k in replay} == replay
    assert json.loads(message.headers["x-original-headers"]["StringValue"]) == others


def test_headers_sqs_would_reject_travel_in_original_headers(make_queue, make_adapter) -> None:
    url = make_queue()
    adapter = make_adapter()
    adapter.publish(
        Target(url), [OutgoingMessage(body=b"x", headers={"x-replay-id": "r", "bad name": "v", "ctl": "a\x01b"})]
    )

    [message] = _receive_all(adapter, url, 1)

    assert set(message.headers) == {"x-replay-id", "x-original-headers"}
    assert json.loads(message.headers["x-original-headers"]["StringValue"]) == {"bad name": "v", "ctl": "a\x01b"}


def test_a_missing_queue_is_a_permanent_broker_error(make_queue, make_adapter) -> None:
    missing = make_queue() + "-missing"
    adapter = make_adapter()

    for call in (
        lambda: adapter.publish(Target(missing), [OutgoingMessage(body=b"x")]),
        lambda: adapter.receive(DlqAddress(missing), max_messages=1, wait_seconds=0),
        lambda: adapter.depth(DlqAddress(missing)),
    ):
        with pytest.raises(BrokerError) as caught:
            call()
        assert caught.value.permanent
        assert "NonExistentQueue" in str(caught.value) and "does not exist" in str(caught.value)


# timing: it bounds each call at 3 s, which a machine busy with parallel tests decided once (5.3 s)
@pytest.mark.timing
def test_an_unreachable_endpoint_fails_fast(make_adapter) -> None:
    adapter = make_adapter(timeout=2.0)
    adapter.broker.endpoint = "http://127.0.0.1:1"
    url = "http://127.0.0.1:1/000000000000/nowhere"

    for call in (
        adapter.ping,
        lambda: adapter.receive(DlqAddress(url), max_messages=5, wait_seconds=20),
        lambda: adapter.publish(Target(url), [OutgoingMessage(body=b"x")]),
        adapter.list_candidates,
    ):
        started = time.monotonic()
        with pytest.raises(BrokerError) as caught:
            call()
        assert time.monotonic() - started < 3
        assert not caught.value.permanent
        assert "127.0.0.1:1" in str(caught.value)
        assert os.environ["LOCAL_SQS_SECRET_ACCESS_KEY"] not in str(caught.value)


def test_a_malformed_option_is_a_permanent_error(make_queue, make_adapter) -> None:
    url = make_queue()
    with pytest.raises(BrokerError) as caught:
        make_adapter(visibility_timeout="two minutes").receive(DlqAddress(url), max_messages=1, wait_seconds=0)
    assert caught.value.permanent and "visibility_timeout" in str(caught.value)


def test_list_candidates_finds_the_dlq_with_its_source(sqs, make_queue, make_adapter) -> None:
    dlq = make_queue("parking")
    work = make_queue(
        "orders", RedrivePolicy=json.dumps({"deadLetterTargetArn": _arn(sqs, dlq), "maxReceiveCount": "3"})
    )
    named = make_queue("payments-dlq")
    plain = make_queue("plain")
    sqs.send_message(QueueUrl=dlq, MessageBody="dead")

    candidates = {c.address.name: c for c in make_adapter().list_candidates()}

    assert candidates[dlq].sources == (work,)
    assert candidates[dlq].depth == 1
    assert "dead-letter target" in candidates[dlq].hint
    assert candidates[named].sources == () and "name" in candidates[named].hint
    assert plain not in candidates and work not in candidates


@pytest.mark.slow
def test_throughput_of_2000_one_kib_messages(make_queue, make_adapter) -> None:
    """Not a pass/fail benchmark: prints the rates (run with -s) and checks nothing was lost."""
    url = make_queue()
    adapter = make_adapter()
    total = 2000
    messages = [
        OutgoingMessage(body=(f"{i:06d}" + "x" * 1018).encode(), headers={"x-replay-id": f"r{i}"}) for i in range(total)
    ]

    started = time.perf_counter()
    confirmed = 0
    for start in range(0, total, 100):
        confirmed += sum(r.confirmed for r in adapter.publish(Target(url), messages[start : start + 100]))
    publish_seconds = time.perf_counter() - started
    assert confirmed == total

    started = time.perf_counter()
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    while len(seen) < total and time.monotonic() < deadline:
        batch = adapter.receive(DlqAddress(url), max_messages=100, wait_seconds=1)
        adapter.remove(DlqAddress(url), batch)
        seen.update(m.identity for m in batch)
    drain_seconds = time.perf_counter() - started

    assert len(seen) == total
    assert adapter.depth(DlqAddress(url)) == 0
    print(
        f"\nSQS (LocalStack) publish: {total / publish_seconds:.0f} msg/s ({publish_seconds:.2f} s); "
        f"receive+remove: {total / drain_seconds:.0f} msg/s ({drain_seconds:.2f} s)"
    )
