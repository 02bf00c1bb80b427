"""RabbitMqAdapter against the real local RabbitMQ: bytes and headers survive, receive holds
messages until remove (invariant 1), publish counts only confirmed and routed messages
(invariant 2), dead letters keep their x-death story, and broken brokers give BrokerError."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pika
import pytest

from recovery.brokers.base import BrokerError, DlqAddress, OutgoingMessage, Target
from recovery.brokers.rabbitmq import RabbitMqAdapter
from recovery.models import BrokerKind
from tests.factories import LocalBrokerFactory
from tests.helpers import wait_until
from tests.namespace import unique


def _unique(prefix: str) -> str:
    return unique(prefix)


def _management(method: str, path: str, body: dict | None = None) -> object:
    """Call the local management API as the test's admin user (set-up only, never the code under test)."""
    user, password = os.environ["LOCAL_RABBITMQ_USERNAME"], os.environ["LOCAL_RABBITMQ_PASSWORD"]
    request = urllib.request.Request(  # noqa: S310 - local test URL
        os.environ["LOCAL_RABBITMQ_MANAGEMENT_URL"] + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local test URL
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def open_adapter() -> Iterator[Callable[..., RabbitMqAdapter]]:
    """Adapters made by the test, all closed afterwards."""
    made: list[RabbitMqAdapter] = []

    def make(**overrides: object) -> RabbitMqAdapter:
        adapter = RabbitMqAdapter(LocalBrokerFactory.build(kind=BrokerKind.RABBITMQ, **overrides), timeout=5.0)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture
def adapter(open_adapter: Callable[..., RabbitMqAdapter]) -> RabbitMqAdapter:
    return open_adapter()


@pytest.fixture
def amqp() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A raw pika channel for the test's own set-up (declarations, dead-lettering)."""
    broker = LocalBrokerFactory.build(kind=BrokerKind.RABBITMQ)
    connection = pika.BlockingConnection(RabbitMqAdapter(broker, timeout=5.0).connection_parameters())
    yield connection.channel()
    connection.close()


@pytest.fixture
def declare(amqp) -> Iterator[Callable[..., str]]:
    """Declare uniquely named durable queues / exchanges; delete them after the test."""
    queues: list[str] = []
    exchanges: list[str] = []

    def make(kind: str = "queue", prefix: str = "test", *, suffix: str = "", **kwargs: object) -> str:
        name = _unique(prefix) + suffix
        if kind == "queue":
            amqp.queue_declare(name, durable=True, **kwargs)
            queues.append(name)
        else:
            amqp.exchange_declare(name, exchange_type=kind, durable=True, **kwargs)
            exchanges.append(name)
        return name

    yield make
    channel = amqp if amqp.is_open else amqp.connection.channel()
    for name in queues:
        channel.queue_delete(name)
    for name in exchanges:
        channel.exchange_delete(name)


def _messages(count: int, *, size: int = 16, prefix: str = "m") -> list[OutgoingMessage]:
    return [
        OutgoingMessage(body=os.urandom(size), headers={"n": str(i)}, properties={"message_id": f"{prefix}-{i}"})
        for i in range(count)
    ]


def _publish_to(adapter: RabbitMqAdapter, queue: str, messages: list[OutgoingMessage]) -> None:
    results = adapter.publish(Target(name="", routing_key=queue), messages)
    assert [r.confirmed for r in results] == [True] * len(messages), results


def test_it_round_trips_bytes_and_headers(adapter, declare) -> None:
    queue = declare()
    sent_at = 1_700_000_000
    headers = {
        "nested": {"level": 1, "inner": {"list": [1, "two", b"three"]}},
        "raw": b"\xff\x00\xfe",
        "count": 42,
        "flag": True,
        "text": "h\u00e9llo",
    }
    properties = {
        "content_type": "application/octet-stream",
        "message_id": "msg-1",
        "correlation_id": "corr-1",
        "type": "order.created",
        "app_id": "billing",
        "timestamp": sent_at,
    }
    odd = b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"
    big = os.urandom(1024 * 1024)
    _publish_to(
        adapter,
        queue,
        [
            OutgoingMessage(body=odd, headers=headers, properties=properties),
            OutgoingMessage(body=big, properties={"message_id": "msg-2"}),
        ],
    )

    first, second = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=2)

    assert (first.body, second.body) == (odd, big)
    assert first.identity == "msg-1" and second.identity == "msg-2"
    assert first.headers == {
        "nested": {"level": 1, "inner": {"list": [1, "two", "three"]}},
        "raw": {"$base64": base64.b64encode(b"\xff\x00\xfe").decode()},
        "count": 42,
        "flag": True,
        "text": "h\u00e9llo",
    }
    assert first.properties == {
        **properties,
        "delivery_mode": 2,
        "exchange": "",
        "routing_key": queue,
        "redelivered": False,
    }
    json.dumps([first.headers, first.properties, second.headers, second.properties])
    assert second.size == 1024 * 1024


def test_receive_returns_at_most_max_messages(adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(5))

    first = adapter.receive(DlqAddress(queue), max_messages=3, wait_seconds=1)
    rest = adapter.receive(DlqAddress(queue), max_messages=3, wait_seconds=1)

    assert [m.identity for m in first] == ["m-0", "m-1", "m-2"]
    assert [m.identity for m in rest] == ["m-3", "m-4"]


def test_receive_returns_promptly_on_an_empty_queue(adapter, declare) -> None:
    queue = declare()
    started = time.monotonic()
    assert adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=0.5) == []
    assert 0.4 < time.monotonic() - started < 1.0


def test_receive_returns_promptly_once_the_queue_is_drained(adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(3))
    started = time.monotonic()
    assert len(adapter.receive(DlqAddress(queue), max_messages=100, wait_seconds=5)) == 3
    assert time.monotonic() - started < 1.0


def test_received_messages_are_held_until_removed(adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(4))
    held = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)
    assert len(held) == 4
    assert adapter.depth(DlqAddress(queue)) == 0  # unacked, not ready


def test_remove_acks(adapter, open_adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(3))
    received = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)

    adapter.remove(DlqAddress(queue), received)
    adapter.close()

    assert adapter.depth(DlqAddress(queue)) == 0
    assert open_adapter().receive(DlqAddress(queue), max_messages=10, wait_seconds=0.3) == []


def test_remove_acks_only_the_given_messages(adapter, open_adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(5))
    m0, m1, m2, m3, m4 = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)

    adapter.remove(DlqAddress(queue), [m0, m1])  # the contiguous run from the lowest tag: one multiple ack
    adapter.remove(DlqAddress(queue), [m4, m2])  # a gap: acked one by one
    adapter.close()

    again = open_adapter().receive(DlqAddress(queue), max_messages=10, wait_seconds=1)
    assert [m.identity for m in again] == ["m-3"]


def test_closing_without_remove_redelivers_the_same_identity(adapter, open_adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(2))
    first = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)
    adapter.close()

    again = open_adapter().receive(DlqAddress(queue), max_messages=10, wait_seconds=2)

    assert [m.identity for m in again] == [m.identity for m in first] == ["m-0", "m-1"]
    assert [m.body for m in again] == [m.body for m in first]
    assert all(m.properties["redelivered"] for m in again)


def test_release_requeues(adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(3))
    first = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)

    adapter.release(DlqAddress(queue), first)

    assert wait_until(lambda: adapter.depth(DlqAddress(queue)) == 3, timeout=3)
    again = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)
    assert sorted(m.identity for m in again) == ["m-0", "m-1", "m-2"]
    assert all(m.properties["redelivered"] for m in again)


def test_one_consumer_runs_from_the_first_receive_until_release(adapter, amqp, declare) -> None:
    """No consume/cancel round trip per receive: the consumer stays, prefetching two batches."""
    queue = declare()
    _publish_to(adapter, queue, _messages(10))

    def consumers_and_ready() -> tuple[int, int]:
        method = amqp.queue_declare(queue, passive=True).method
        return method.consumer_count, method.message_count

    first = adapter.receive(DlqAddress(queue), max_messages=2, wait_seconds=1)
    assert wait_until(lambda: consumers_and_ready() == (1, 6), timeout=3)  # 2 handed out, 2 prefetched
    second = adapter.receive(DlqAddress(queue), max_messages=2, wait_seconds=1)
    assert [m.identity for m in first + second] == ["m-0", "m-1", "m-2", "m-3"]
    assert consumers_and_ready() == (1, 6)  # taken from the prefetch; four unacked, so none more

    adapter.release(DlqAddress(queue), second)  # stops the consumer, requeues its prefetch too

    assert wait_until(lambda: consumers_and_ready() == (0, 8), timeout=3)
    adapter.remove(DlqAddress(queue), first)  # handed-out messages stay held across the release
    adapter.close()
    assert wait_until(lambda: consumers_and_ready() == (0, 8), timeout=3)


def test_prefetched_messages_go_back_when_the_adapter_closes(adapter, open_adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(6))
    (first,) = adapter.receive(DlqAddress(queue), max_messages=1, wait_seconds=1)
    adapter.remove(DlqAddress(queue), [first])
    adapter.close()

    rest = open_adapter().receive(DlqAddress(queue), max_messages=10, wait_seconds=2)

    redelivered = {m.identity: m.properties["redelivered"] for m in rest}
    assert sorted(redelivered) == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    assert redelivered["m-1"] and not redelivered["m-5"]  # prefetched (2 at a time) vs never delivered


def test_remove_refuses_messages_it_no_longer_holds(adapter, declare) -> None:
    queue = declare()
    _publish_to(adapter, queue, _messages(1))
    received = adapter.receive(DlqAddress(queue), max_messages=1, wait_seconds=1)
    adapter.close()  # the delivery tag dies with the channel; a new channel reuses tag numbers

    with pytest.raises(BrokerError, match="not held by this adapter"):
        adapter.remove(DlqAddress(queue), received)


def test_receive_from_a_missing_queue_is_permanent(adapter) -> None:
    missing = _unique("missing")
    with pytest.raises(BrokerError, match=missing) as raised:
        adapter.receive(DlqAddress(missing), max_messages=1, wait_seconds=0)
    assert raised.value.permanent
    with pytest.raises(BrokerError, match=missing) as raised:
        adapter.depth(DlqAddress(missing))
    assert raised.value.permanent


def test_publish_returns_one_confirmed_result_per_message(adapter, declare) -> None:
    queue = declare()
    messages = _messages(300, size=1024)

    results = adapter.publish(Target(name="", routing_key=queue), messages)

    assert [(r.index, r.confirmed, r.error) for r in results] == [(i, True, "") for i in range(300)]
    assert [r.broker_message_id for r in results] == [f"m-{i}" for i in range(300)]
    assert adapter.depth(DlqAddress(queue)) == 300


def test_publish_via_an_exchange_without_binding_is_unroutable(adapter, declare) -> None:
    exchange = declare("direct", prefix="nobinding")
    queue = declare()

    results = adapter.publish(Target(name=exchange, routing_key="anything"), _messages(3))

    assert [(r.confirmed, r.error) for r in results] == [(False, "unroutable: NO_ROUTE")] * 3
    _publish_to(adapter, queue, _messages(2))
    assert adapter.depth(DlqAddress(queue)) == 2


def test_publish_fails_only_the_returned_messages_of_a_mixed_batch(adapter, amqp, declare) -> None:
    exchange = declare("headers", prefix="mixed")
    queue = declare()
    amqp.queue_bind(queue, exchange, arguments={"x-match": "all", "route": "yes"})
    messages = [
        OutgoingMessage(
            body=f"body-{i}".encode(),
            headers={"route": "no" if i % 7 == 3 else "yes"},
            properties={"message_id": f"m-{i}"},
        )
        for i in range(700)
    ]

    results = adapter.publish(Target(name=exchange), messages)

    unrouted = [i for i in range(700) if i % 7 == 3]
    assert [r.index for r in results if not r.confirmed] == unrouted
    assert {r.error for r in results if not r.confirmed} == {"unroutable: NO_ROUTE"}
    assert wait_until(lambda: adapter.depth(DlqAddress(queue)) == 700 - len(unrouted), timeout=3)


def test_publish_to_a_missing_exchange_fails_the_batch_and_the_adapter_recovers(adapter, declare) -> None:
    """Documented behaviour: the broker closes the channel (404); every message of the batch
    comes back unconfirmed with the broker's text, nothing is raised, the next call works."""
    missing = _unique("no-such-exchange")
    queue = declare()

    results = adapter.publish(Target(name=missing, routing_key="x"), _messages(3))

    assert not any(r.confirmed for r in results)
    assert all("404" in r.error and "NOT_FOUND" in r.error and missing in r.error for r in results)
    _publish_to(adapter, queue, _messages(2))
    assert len(adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)) == 2


def test_a_dead_lettered_message_carries_x_death(adapter, amqp, declare) -> None:
    dlx = declare("direct", prefix="dlx")
    dlq = declare(prefix="orders-dead")
    amqp.queue_bind(dlq, dlx, routing_key="dead")
    work = declare(prefix="orders-work", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    _publish_to(
        adapter,
        work,
        [OutgoingMessage(body=b'{"order": 7}', headers={"tenant": "acme"}, properties={"message_id": "order-7"})],
    )
    method, _properties, _body = amqp.basic_get(work)
    assert method is not None
    amqp.basic_reject(method.delivery_tag, requeue=False)

    assert wait_until(lambda: adapter.depth(DlqAddress(dlq)) == 1, timeout=3)
    (dead,) = adapter.receive(DlqAddress(dlq), max_messages=10, wait_seconds=2)

    assert dead.identity == "order-7" and dead.body == b'{"order": 7}'
    assert dead.headers["tenant"] == "acme"
    assert dead.headers["x-first-death-queue"] == work
    assert dead.headers["x-first-death-reason"] == "rejected"
    (death,) = dead.headers["x-death"]
    assert death["queue"] == work and death["reason"] == "rejected" and death["count"] == 1
    assert death["exchange"] == "" and death["routing-keys"] == [work]
    assert abs(datetime.fromisoformat(death["time"]) - datetime.now(UTC)).total_seconds() < 60
    assert dead.properties["exchange"] == dlx and dead.properties["routing_key"] == "dead"
    json.dumps(dead.headers)


def test_list_candidates_finds_dlqs_and_their_sources(adapter, amqp, declare) -> None:
    dlx = declare("direct", prefix="dlx")
    dlq = declare(prefix="plain-target")  # not DLQ-like by name: found through its source
    amqp.queue_bind(dlq, dlx, routing_key="dead")
    work = declare(prefix="plain-work", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    named = declare(prefix="payments", suffix=".DLQ")
    other = declare(prefix="plain-other")

    candidates = {c.address.name: c for c in adapter.list_candidates()}

    assert candidates[dlq].sources == (work,)
    assert candidates[dlq].address == DlqAddress(dlq, vhost="/")
    assert candidates[dlq].depth in (0, None)  # the API reports null for a few seconds after creation
    assert candidates[named].sources == () and "name" in candidates[named].hint
    assert work not in candidates and other not in candidates


def test_list_candidates_needs_a_management_url(open_adapter) -> None:
    with pytest.raises(BrokerError, match="options.management_url") as raised:
        open_adapter(options={}).list_candidates()
    assert raised.value.permanent


def test_it_keeps_virtual_hosts_apart(adapter) -> None:
    vhost = _unique("vh")
    quoted = quote(vhost, safe="")
    _management("PUT", f"/api/vhosts/{quoted}", {})
    try:
        user = os.environ["LOCAL_RABBITMQ_USERNAME"]
        _management("PUT", f"/api/permissions/{quoted}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        _management("PUT", f"/api/queues/{quoted}/inbox", {"durable": True})

        results = adapter.publish(Target(name="", routing_key="inbox", vhost=vhost), _messages(2))

        assert all(r.confirmed for r in results)
        received = adapter.receive(DlqAddress("inbox", vhost=vhost), max_messages=10, wait_seconds=1)
        assert [m.identity for m in received] == ["m-0", "m-1"]
        with pytest.raises(BrokerError, match="inbox") as raised:
            adapter.depth(DlqAddress("inbox"))  # the default vhost has no such queue
        assert raised.value.permanent
        adapter.remove(DlqAddress("inbox", vhost=vhost), received)
        assert adapter.depth(DlqAddress("inbox", vhost=vhost)) == 0
    finally:
        adapter.close()
        _management("DELETE", f"/api/vhosts/{quoted}")


def test_a_nacked_message_is_not_confirmed(adapter, declare) -> None:
    queue = declare(arguments={"x-max-length": 2, "x-overflow": "reject-publish"})

    results = adapter.publish(Target(name="", routing_key=queue), _messages(5))

    assert [r.confirmed for r in results] == [True, True, False, False, False]
    assert {r.error for r in results[2:]} == {"nacked by broker"}


@pytest.mark.fault
def test_it_reconnects_after_the_broker_drops_its_connection(open_adapter, declare) -> None:
    adapter = open_adapter(name=_unique("dropped"))
    queue = declare()
    _publish_to(adapter, queue, _messages(2))
    held = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=1)

    def connections() -> list[str]:
        listed = _management("GET", "/api/connections?columns=name,user_provided_name")
        return [c["name"] for c in listed if c.get("user_provided_name") == f"dlq-console {adapter.broker.name}"]

    assert wait_until(lambda: connections(), timeout=30)  # the management API lists it after its stats tick
    for name in connections():
        _management("DELETE", f"/api/connections/{quote(name, safe='')}")

    with pytest.raises(BrokerError):  # the deliveries died with the connection: never acked blindly
        adapter.remove(DlqAddress(queue), held)
    again = adapter.receive(DlqAddress(queue), max_messages=10, wait_seconds=2)
    assert [m.identity for m in again] == ["m-0", "m-1"]
    adapter.remove(DlqAddress(queue), again)
    assert adapter.depth(DlqAddress(queue)) == 0


def test_a_broker_that_is_down_fails_quickly(open_adapter) -> None:
    adapter = open_adapter(endpoint="amqp://127.0.0.1:1/%2F", credentials_ref="")
    for call in (
        lambda: adapter.receive(DlqAddress("q"), max_messages=1, wait_seconds=0),
        lambda: adapter.depth(DlqAddress("q")),
        lambda: adapter.publish(Target(name="", routing_key="q"), _messages(1)),
    ):
        started = time.monotonic()
        with pytest.raises(BrokerError, match="127.0.0.1:1") as raised:
            call()
        assert time.monotonic() - started < 2
        assert not raised.value.permanent


def test_a_wrong_password_is_permanent_and_not_echoed(open_adapter, tmp_path: Path) -> None:
    secret = f"wrong-{uuid.uuid4().hex}"
    creds = tmp_path / "rabbit.json"
    creds.write_text(json.dumps({"username": os.environ["LOCAL_RABBITMQ_USERNAME"], "password": secret}))
    adapter = open_adapter(credentials_ref=f"file:{creds}")

    for call in (
        lambda: adapter.receive(DlqAddress("q"), max_messages=1, wait_seconds=0),
        adapter.ping,
        adapter.list_candidates,
    ):
        with pytest.raises(BrokerError) as raised:
            call()
        assert raised.value.permanent
        assert secret not in str(raised.value)


@pytest.mark.slow
@pytest.mark.timing  # a speed bound: measured alone, in the serial phase
def test_pipelined_publish_outpaces_one_confirm_at_a_time(adapter, amqp, declare, capsys) -> None:
    """5,000 1 KiB persistent messages: the adapter vs pika's BlockingChannel.confirm_delivery."""
    queue = declare()
    messages = _messages(5000, size=1024)

    started = time.perf_counter()
    results = adapter.publish(Target(name="", routing_key=queue), messages)
    pipelined = len(messages) / (time.perf_counter() - started)
    assert all(r.confirmed for r in results)

    amqp.confirm_delivery()
    started = time.perf_counter()
    for message in messages:
        amqp.basic_publish(
            "",
            queue,
            message.body,
            pika.BasicProperties(delivery_mode=2, message_id=message.properties["message_id"], headers=message.headers),
            mandatory=True,
        )
    one_at_a_time = len(messages) / (time.perf_counter() - started)

    with capsys.disabled():
        print(f"\npublish 5000 x 1 KiB: pipelined {pipelined:,.0f} msg/s, one at a time {one_at_a_time:,.0f} msg/s")
    assert pipelined > 2 * one_at_a_time


def test_confirm_bookkeeping_handles_multiple_acks_returns_and_duplicates() -> None:
    """The frame logic behind invariant 2, fed the frames RabbitMQ sends (no client involved)."""
    from recovery.brokers.rabbitmq import _Batch

    messages = [OutgoingMessage(body=b"same", properties={"message_id": "dup"})] * 2 + _messages(4)
    batch = _Batch(Target(name="ex", routing_key="rk"), messages)
    for index in range(6):
        batch.sent(index, 101 + index)  # a channel that already published 100 messages
    no_route = pika.spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="ex", routing_key="rk")

    # Identical messages in flight: a return cannot tell them apart, so neither counts (a harmless
    # re-publish, never a false confirm).
    batch.returned(no_route, pika.BasicProperties(message_id="dup"), b"same")
    batch.confirm(102, multiple=True, acked=True)
    batch.returned(no_route, pika.BasicProperties(message_id="m-1"), messages[3].body)
    batch.confirm(104, multiple=True, acked=True)  # covers 103 (routed) and 104 (returned)
    batch.confirm(106, multiple=False, acked=False)
    assert batch.pending == {105: 4}
    batch.confirm(105, multiple=False, acked=True)

    assert [(r.confirmed, r.error) for r in batch.results()] == [
        (False, "unroutable: NO_ROUTE"),
        (False, "unroutable: NO_ROUTE"),
        (True, ""),
        (False, "unroutable: NO_ROUTE"),
        (True, ""),
        (False, "nacked by broker"),
    ]


def test_a_management_api_error_500_is_asked_once_more(open_adapter) -> None:
    """RabbitMQ's management API answers 500 (badkey) when a queue is deleted while it lists the
    queues (seen beside parallel tests): Discover asks once more instead of failing. A second 500
    is reported. A real HTTP server on loopback stands in for the API."""
    import http.server
    import threading

    answers = [500, 200, 500, 500]

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            code = answers.pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'[{"name": "orders.dlq"}]' if code == 200 else b"badkey")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        adapter = open_adapter(options={"management_url": url}, credentials_ref="")
        assert adapter._management_get("/api/queues") == [{"name": "orders.dlq"}]
        with pytest.raises(BrokerError, match="HTTP 500"):
            adapter._management_get("/api/queues")
        assert answers == []
    finally:
        server.shutdown()
