"""Factories for classification tests: DLQs of each broker kind and letters written straight
into the store, unclassified, as capture leaves them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

from recovery.models import Broker, BrokerKind, CaptureMode, DeadLetter, DeadLetterQueue

_numbers = count(1)


@pytest.fixture
def make_dlq(db) -> Callable[..., DeadLetterQueue]:
    def make(kind: str = BrokerKind.KAFKA, *, name: str | None = None, retention_seconds: int | None = None):
        n = next(_numbers)
        broker = Broker.objects.create(name=f"{kind}-{n}", kind=kind, endpoint="127.0.0.1:1")
        mode = CaptureMode.OFFSETS if kind == BrokerKind.KAFKA else CaptureMode.DRAIN
        return DeadLetterQueue.objects.create(
            broker=broker, name=name or f"{kind}-dlq-{n}", address=f"q{n}", consumer_group="g", capture_mode=mode,
            retention_seconds=retention_seconds,
        )  # fmt: skip

    return make


@pytest.fixture
def dlq(make_dlq) -> DeadLetterQueue:
    return make_dlq()


@pytest.fixture
def make_letter(dlq) -> Callable[..., DeadLetter]:
    """A captured, unclassified letter; ``body`` bytes set the size and content hash."""

    def make(*, target: DeadLetterQueue | None = None, body: bytes = b"{}", **fields: Any) -> DeadLetter:
        n = next(_numbers)
        values: dict[str, Any] = {
            "identity": f"test:{n}",
            "body": body,
            "body_size": len(body),
            "content_hash": hashlib.sha256(body).hexdigest(),
            "captured_at": datetime.now(UTC),
            "headers": {},
            "properties": {},
            "origin": "kafka:orders",
        }
        values.update(fields)
        return DeadLetter.objects.create(dlq=target or dlq, **values)

    return make
