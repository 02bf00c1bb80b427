from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client

from recovery.models import DeadLetterQueue
from recovery.permissions import Role
from tests.database import django_db_setup  # noqa: F401 (replaces pytest-django's: a copied template)
from tests.factories import DeadLetterQueueFactory, UserFactory

pytest_plugins = ["tests.brokers.fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_triggers() -> None:
    """Transactional tests end with a TRUNCATE of every table, which the audit tables' triggers
    refuse (invariant 8). The test database's owner is a superuser: it flushes in replica mode,
    where ordinary triggers do not fire. Nothing outside the test teardown does this."""
    from django.db import connection
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            original(self)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = DEFAULT")

    TransactionTestCase._fixture_teardown = teardown


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    """Create a user holding the given roles (none by default) who signs in with PASSWORD."""

    def make(*roles: Role, **fields: Any) -> Any:
        return UserFactory(roles=roles, **fields)

    return make


@pytest.fixture
def client_for(make_user: Callable[..., Any]) -> Callable[..., Client]:
    """A test client logged in as a fresh user with the given roles."""

    def make(*roles: Role) -> Client:
        client = Client()
        client.force_login(make_user(*roles))
        return client

    return make


@pytest.fixture
def dlq(db: Any) -> DeadLetterQueue:
    """The orders DLQ (orders-dlt, topic orders.DLT) on a Kafka broker nobody listens on."""
    return DeadLetterQueueFactory(name="orders-dlt")


@pytest.fixture
def test_redis() -> redis.Redis:
    """The suite's own Redis database, emptied before the test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()
