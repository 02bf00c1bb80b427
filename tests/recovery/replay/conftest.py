"""Fixtures for the plan checks (preconditions, stop conditions, verification steps): plans,
items, runs and ledger rows written straight into the store (tests/factories.py), and a tiny real
HTTP server. Real brokers come from tests/brokers/fixtures.py (``rabbit``, ``sqs_harness``,
``kafka_harness``). Names start with ``chk_`` so they stay out of the way of other fixtures in
this folder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from recovery.models import (
    Broker,
    BrokerKind,
    DeadLetter,
    DeadLetterQueue,
    Disposition,
    LedgerEntry,
    PlanItem,
    ReplayPlan,
    ReplayRun,
)
from recovery.permissions import Role
from tests.factories import (
    BrokerFactory,
    DeadLetterFactory,
    DeadLetterQueueFactory,
    LedgerEntryFactory,
    PlanItemFactory,
    ReplayPlanFactory,
    ReplayRunFactory,
    UserFactory,
)
from tests.helpers import free_port


@pytest.fixture
def chk_target() -> Callable[..., dict[str, Any]]:
    """A plan item's target as recovery.replay.targets freezes it."""

    def make(broker: Broker, name: str = "", routing_key: str = "", vhost: str = "") -> dict[str, Any]:
        return {"broker": broker.pk, "name": name, "routing_key": routing_key, "vhost": vhost}

    return make


@pytest.fixture
def chk_dlq(db: Any) -> DeadLetterQueue:
    """A DLQ row the letters come from (its broker is never called)."""
    return DeadLetterQueueFactory()


@pytest.fixture
def chk_down_broker(db: Any) -> Broker:
    """A RabbitMQ broker row, with credentials, on a port where nothing listens."""
    return BrokerFactory(
        name="chk-down", kind=BrokerKind.RABBITMQ, endpoint=f"amqp://127.0.0.1:{free_port()}/%2F",
        credentials_ref="env:LOCAL_RABBITMQ",
    )  # fmt: skip


@pytest.fixture
def chk_letter(chk_dlq: DeadLetterQueue) -> Callable[..., DeadLetter]:
    """A captured, classified letter of ``chk_dlq`` (disposition replay unless told otherwise)."""

    def make(**fields: Any) -> DeadLetter:
        return DeadLetterFactory(**{"dlq": chk_dlq, "disposition": Disposition.REPLAY, **fields})

    return make


@pytest.fixture
def chk_plan(db: Any) -> Callable[..., ReplayPlan]:
    """Draft plans, all by one operator."""
    author = UserFactory(password=None, roles=[Role.OPERATOR])

    def make(**fields: Any) -> ReplayPlan:
        return ReplayPlanFactory(author=author, **fields)

    return make


@pytest.fixture
def chk_item(chk_letter: Callable[..., DeadLetter]) -> Callable[..., PlanItem]:
    """An included item of ``plan`` going to ``target`` (a new letter unless one is given)."""

    def make(plan: ReplayPlan, target: dict[str, Any], *, letter: DeadLetter | None = None, **fields: Any) -> PlanItem:
        return PlanItemFactory(plan=plan, letter=letter or chk_letter(), target=target, **fields)

    return make


@pytest.fixture
def chk_run(db: Any) -> Callable[..., ReplayRun]:
    """A running run of ``plan``, started now unless told otherwise."""
    return lambda plan, **fields: ReplayRunFactory(plan=plan, **fields)


@pytest.fixture
def chk_ledger(db: Any) -> Callable[..., LedgerEntry]:
    """A ledger row of ``run`` for ``item``; published when ``published_at`` is given."""
    return lambda run, item, **fields: LedgerEntryFactory(run=run, item=item, **fields)


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
