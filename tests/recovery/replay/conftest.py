"""Fixtures for the plan checks (preconditions, stop conditions, verification steps): plans,
items, runs and ledger rows written straight into the store, real brokers through the contract
harnesses, and a tiny real HTTP server. Names start with ``chk_`` so they stay out of the way of
other fixtures in this folder."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from recovery.models import (
    AttemptState,
    Broker,
    BrokerKind,
    CaptureMode,
    DeadLetter,
    DeadLetterQueue,
    Disposition,
    LedgerEntry,
    PlanItem,
    PlanItemState,
    ReplayPlan,
    ReplayRun,
    RunState,
)
from recovery.permissions import Role
from tests.brokers.harness import KafkaHarness, RabbitHarness, SqsHarness


@pytest.fixture
def chk_target() -> Callable[..., dict[str, Any]]:
    """A plan item's target as recovery.replay.targets freezes it."""

    def make(broker: Broker, name: str = "", routing_key: str = "", vhost: str = "") -> dict[str, Any]:
        return {"broker": broker.pk, "name": name, "routing_key": routing_key, "vhost": vhost}

    return make


@pytest.fixture
def chk_dlq(db: Any) -> DeadLetterQueue:
    """A DLQ row the letters come from (its broker is never called)."""
    suffix = uuid.uuid4().hex[:8]
    broker = Broker.objects.create(name=f"chk-src-{suffix}", kind=BrokerKind.KAFKA, endpoint="127.0.0.1:1")
    return DeadLetterQueue.objects.create(
        broker=broker, name=f"chk-dlq-{suffix}", address="orders.DLT", consumer_group="g",
        capture_mode=CaptureMode.OFFSETS,
    )  # fmt: skip


@pytest.fixture
def chk_letter(chk_dlq: DeadLetterQueue) -> Callable[..., DeadLetter]:
    """A captured, classified letter (disposition replay unless told otherwise)."""

    def make(**fields: Any) -> DeadLetter:
        n = uuid.uuid4().hex
        body = fields.pop("body", b'{"order": 1}')
        values: dict[str, Any] = dict(
            identity=f"kafka:orders.DLT/0/{n}", body=body, body_size=len(body), content_hash=n + n[:32],
            captured_at=datetime.now(UTC), headers={}, properties={}, disposition=Disposition.REPLAY,
        )  # fmt: skip
        values.update(fields)
        return DeadLetter.objects.create(dlq=values.pop("dlq", chk_dlq), **values)

    return make


@pytest.fixture
def chk_plan(make_user: Callable[..., Any]) -> Callable[..., ReplayPlan]:
    author = make_user(Role.OPERATOR)

    def make(**fields: Any) -> ReplayPlan:
        return ReplayPlan.objects.create(name=fields.pop("name", "chk plan"), author=author, **fields)

    return make


@pytest.fixture
def chk_item(chk_letter: Callable[..., DeadLetter]) -> Callable[..., PlanItem]:
    """An included item of ``plan`` going to ``target`` (a new letter unless one is given)."""

    def make(plan: ReplayPlan, target: dict[str, Any], *, letter: DeadLetter | None = None, **fields: Any) -> PlanItem:
        return PlanItem.objects.create(
            plan=plan, letter=letter or chk_letter(), target=target, replay_id=f"r{uuid.uuid4().hex}",
            state=fields.pop("state", PlanItemState.INCLUDED), **fields,
        )  # fmt: skip

    return make


@pytest.fixture
def chk_run() -> Callable[..., ReplayRun]:
    def make(plan: ReplayPlan, **fields: Any) -> ReplayRun:
        values: dict[str, Any] = {"state": RunState.RUNNING, "plan_hash": "x", "started_at": datetime.now(UTC)}
        values.update(fields)
        return ReplayRun.objects.create(plan=plan, **values)

    return make


@pytest.fixture
def chk_ledger() -> Callable[..., LedgerEntry]:
    """A ledger row of ``run`` for ``item``; published when ``published_at`` is given."""

    def make(run: ReplayRun, item: PlanItem, *, published_at: datetime | None = None, **fields: Any) -> LedgerEntry:
        state = fields.pop("state", AttemptState.PUBLISHED if published_at else AttemptState.PENDING)
        return LedgerEntry.objects.create(
            run=run, item=item, letter_id=item.letter_id, state=state, published_at=published_at, **fields
        )

    return make


def _harness(factory: Callable[[], Any]) -> Iterator[Any]:
    made = factory()
    yield made
    made.cleanup()


@pytest.fixture
def chk_rabbit(db: Any) -> Iterator[RabbitHarness]:
    yield from _harness(RabbitHarness)


@pytest.fixture
def chk_sqs(db: Any) -> Iterator[SqsHarness]:
    yield from _harness(SqsHarness)


@pytest.fixture
def chk_kafka(db: Any) -> Iterator[KafkaHarness]:
    yield from _harness(KafkaHarness)


class _Handler(BaseHTTPRequestHandler):
    """/status/<code> answers <code>; /health answers the server's current ``health`` status;
    /slow answers after 1.5 s; /redirect answers 302."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
        elif self.path == "/health":
            code = self.server.health  # type: ignore[attr-defined]
        elif self.path == "/slow":
            time.sleep(1.5)
            code = 200
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/status/200")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        pass


class ChkHttp:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.base = f"http://127.0.0.1:{server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def set_health(self, code: int) -> None:
        self.server.health = code  # type: ignore[attr-defined]


@pytest.fixture
def chk_http() -> Iterator[ChkHttp]:
    """A real HTTP server on 127.0.0.1 in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.health = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ChkHttp(server)
    server.shutdown()
    server.server_close()
