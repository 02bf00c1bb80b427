"""The real-broker fixtures, defined once (a plugin named in tests/conftest.py): each makes a
contract harness (tests/brokers/harness.py) with its broker row, and deletes the queues and
topics it made after the test.

- ``harness``: the test runs once per broker kind.
- ``rabbit``, ``sqs_harness``, ``kafka_harness``: that broker only.

A folder whose tests leave more on the broker overrides the fixture with one that requests it and
hands what to delete to its cleanup (``record_drill_queues``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from recovery.models import BrokerKind, Drill
from tests.brokers.harness import HARNESSES, KafkaHarness, RabbitHarness, SqsHarness


def _harness(kind: str) -> Iterator[Any]:
    made = HARNESSES[kind]()
    yield made
    made.cleanup()


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: Any, db: Any) -> Iterator[Any]:
    yield from _harness(request.param)


@pytest.fixture
def rabbit(db: Any) -> Iterator[RabbitHarness]:
    yield from _harness(BrokerKind.RABBITMQ)


@pytest.fixture
def sqs_harness(db: Any) -> Iterator[SqsHarness]:
    yield from _harness(BrokerKind.SQS)


@pytest.fixture
def kafka_harness(db: Any) -> Iterator[KafkaHarness]:
    yield from _harness(BrokerKind.KAFKA)


def record_drill_queues(harness: Any) -> None:
    """Hand every drill queue provisioned on the harness's broker (names, or SQS URLs) to its
    cleanup."""
    for drill in Drill.objects.filter(broker=harness.broker).select_related("dlq"):
        if harness.kind == BrokerKind.SQS:
            names = [drill.work_address, drill.dlq.address if drill.dlq else ""]
            harness.queues.extend(n for n in names if n)
        elif harness.kind == BrokerKind.KAFKA:
            harness.topics.extend(drill.created_queues)
        else:
            harness.queues.extend(drill.created_queues)
