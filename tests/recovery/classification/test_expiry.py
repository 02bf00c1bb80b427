"""Broker-side expiry, counted where each broker counts it (recovery.classification.expiry)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recovery.classification.expiry import expires_at

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SENT_MS = str(int(SENT.timestamp() * 1000))
DEATHS = {
    "x-death": [
        {"queue": "orders", "reason": "rejected", "count": 3, "time": "2024-05-01T12:00:00+00:00"},
        {"queue": "orders.retry", "reason": "expired", "count": 1, "time": "2024-05-01T11:00:00+00:00"},
    ]
}


@pytest.mark.parametrize(
    ("kind", "headers", "properties", "retention", "expected"),
    [
        ("sqs", {}, {"SentTimestamp": SENT_MS}, 345_600, datetime(2024, 5, 5, 12, 0, tzinfo=UTC)),
        ("sqs", {}, {"SentTimestamp": SENT_MS}, None, None),
        ("sqs", {}, {}, 345_600, None),
        ("kafka", {}, {"timestamp": int(SENT.timestamp() * 1000)}, 604_800, datetime(2024, 5, 8, 12, 0, tzinfo=UTC)),
        ("kafka", {}, {"timestamp": None}, 604_800, None),
        # RabbitMQ: the message's own expiration (ms) wins, counted from the latest death
        ("rabbitmq", DEATHS, {"expiration": "60000"}, 86_400, datetime(2024, 5, 1, 12, 1, tzinfo=UTC)),
        ("rabbitmq", DEATHS, {}, 86_400, datetime(2024, 5, 2, 12, 0, tzinfo=UTC)),
        ("rabbitmq", {"x-death": [{"time": 1714564800}]}, {}, 60, datetime(2024, 5, 1, 12, 1, tzinfo=UTC)),
        ("rabbitmq", {}, {"expiration": "60000"}, 86_400, None),  # no death time: unknown
        # hostile values give None, never an error
        ("sqs", {}, {"SentTimestamp": "soon"}, 60, None),
        ("kafka", {}, {"timestamp": 10**30}, 60, None),
        ("rabbitmq", {"x-death": "nope"}, {"expiration": "-5"}, 60, None),
        ("rabbitmq", {"x-death": [{"time": "garbage"}, 7]}, {}, 60, None),
        ("sqs", {}, {"SentTimestamp": SENT_MS}, 10**15, None),
    ],
)
def test_expiry(kind, headers, properties, retention, expected) -> None:
    assert expires_at(kind=kind, headers=headers, properties=properties, retention_seconds=retention) == expected
