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
from recovery.permissions import Role, role_groups
from tests.brokers.harness import HARNESSES


@pytest.fixture
def people(db: Any, django_user_model: Any) -> dict[str, Any]:
    """An author (operator), two approvers, an admin who also plans, and a viewer (no password:
    hashing five per test would dominate these tests' time)."""
    groups = role_groups()
    roles = {
        "author": (Role.OPERATOR,), "approver": (Role.APPROVER,), "approver2": (Role.APPROVER,),
        "admin": (Role.OPERATOR, Role.ADMIN), "viewer": (Role.VIEWER,),
    }  # fmt: skip
    made = {}
    for key, held in roles.items():
        user = django_user_model.objects.create(username=f"{key}-{uuid.uuid4().hex[:6]}")
        user.groups.set([groups[role] for role in held])
        made[key] = user
    return made


@pytest.fixture
def make_person(db: Any, django_user_model: Any) -> Callable[..., Any]:
    def make(*roles: Role) -> Any:
        user = django_user_model.objects.create(username=f"p-{uuid.uuid4().hex[:8]}")
        user.groups.set([role_groups()[role] for role in roles])
        return user

    return make


@pytest.fixture
def idle_broker(db: Any) -> Broker:
    """A broker row nobody is called on (validation and four-eyes tests)."""
    return Broker.objects.create(name=f"idle-{uuid.uuid4().hex[:8]}", kind=BrokerKind.RABBITMQ, endpoint="amqp://x")


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


@pytest.fixture(params=["rabbitmq", "sqs", "kafka"])
def harness(request: Any, db: Any) -> Iterator[Any]:
    """A real broker per parameter; the drill queues a test records in ``harness.drill_queues``
    (names, or SQS URLs) are deleted afterwards."""
    made = HARNESSES[request.param]()
    yield made
    record_drill_queues(made)
    made.cleanup()


def record_drill_queues(harness: Any) -> None:
    """Hand every drill queue provisioned on the harness's broker to its cleanup."""
    for drill in Drill.objects.filter(broker=harness.broker).select_related("dlq"):
        if harness.kind == BrokerKind.SQS:
            names = [drill.work_address, drill.dlq.address if drill.dlq else ""]
            harness.queues.extend(n for n in names if n)
        elif harness.kind == BrokerKind.KAFKA:
            harness.topics.extend(drill.created_queues)
        else:
            harness.queues.extend(drill.created_queues)
