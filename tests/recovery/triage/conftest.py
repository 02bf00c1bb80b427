from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from recovery.models import Broker, BrokerKind, CaptureMode, DeadLetter, DeadLetterQueue

_ids = count()


@pytest.fixture
def dlq(db) -> DeadLetterQueue:
    broker = Broker.objects.create(name="b", kind=BrokerKind.KAFKA, endpoint="127.0.0.1:1")
    return DeadLetterQueue.objects.create(
        broker=broker, name="orders-dlt", address="orders.DLT", consumer_group="g", capture_mode=CaptureMode.OFFSETS
    )


@pytest.fixture
def make_letter(dlq):
    """A letter written straight into the store (what capture + classification would leave)."""

    def make(*, target: DeadLetterQueue | None = None, age_minutes: int = 0, **fields) -> DeadLetter:
        n = next(_ids)
        body = fields.pop("body", b'{"order": %d}' % n)
        values = dict(
            identity=f"kafka:orders.DLT/0/{n}", body=body, body_size=len(body), content_hash=f"{n:064x}",
            captured_at=datetime.now(UTC) - timedelta(minutes=age_minutes), headers={}, properties={},
            error_class="TimeoutError", error_message=f"timed out after {n} ms",
            search_text=f"timeouterror timed out {n}",
        )  # fmt: skip
        values.update(fields)
        return DeadLetter.objects.create(dlq=target or dlq, **values)

    return make
