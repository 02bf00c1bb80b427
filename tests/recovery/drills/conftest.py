"""Drill fixtures: the people four eyes needs, a drill factory, the shipped default rules, and
real brokers (the contract harnesses) whose drill queues are deleted after the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from recovery.classification.services import default_rules_install
from recovery.drills.services import drill_create
from recovery.models import Broker, BrokerKind, Drill
from recovery.permissions import Role
from tests.brokers.fixtures import record_drill_queues
from tests.factories import BrokerFactory, UserFactory


@pytest.fixture
def people(db: Any) -> dict[str, Any]:
    """An author (operator), two approvers, an admin who also plans, and a viewer (no password:
    hashing five per test would dominate these tests' time)."""
    roles = {
        "author": (Role.OPERATOR,), "approver": (Role.APPROVER,), "approver2": (Role.APPROVER,),
        "admin": (Role.OPERATOR, Role.ADMIN), "viewer": (Role.VIEWER,),
    }  # fmt: skip
    return {key: UserFactory(password=None, roles=held) for key, held in roles.items()}


@pytest.fixture
def make_person(db: Any) -> Callable[..., Any]:
    def make(*roles: Role) -> Any:
        return UserFactory(password=None, roles=roles)

    return make


@pytest.fixture
def idle_broker(db: Any) -> Broker:
    """A broker row nobody is called on (validation and four-eyes tests)."""
    return BrokerFactory(kind=BrokerKind.RABBITMQ)


@pytest.fixture
def make_drill(people: dict[str, Any], idle_broker: Broker) -> Callable[..., Drill]:
    """A drill defined by ``people['author']`` (unique name); keyword arguments override fields."""

    def make(*, actor: Any = None, **data: Any) -> Drill:
        values = {"name": f"d-{uuid.uuid4().hex[:8]}", "broker": idle_broker, "schedule": "*/5 * * * *", **data}
        return drill_create(actor=actor or people["author"], data=values)

    return make


@pytest.fixture
def default_rules(db: Any) -> None:
    default_rules_install(actor="test")


@pytest.fixture
def harness(harness: Any) -> Iterator[Any]:
    """A real broker per kind (tests/brokers/fixtures.py); the queues the test's drills
    provisioned on it are deleted with the harness's own."""
    yield harness
    record_drill_queues(harness)
