from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from recovery.audit.services import audit_record
from recovery.models import AuditAction, AuditEvent


def record_events(count: int, *, actor: str = "test") -> list[AuditEvent]:
    events = []
    for i in range(count):
        with transaction.atomic():
            events.append(
                audit_record(
                    actor=actor,
                    action=AuditAction.BROKERS_CONFIGURED,
                    summary=f"event {i}",
                    object_type="recovery.broker",
                    object_id=str(i),
                    before={"n": i},
                    after={"n": i + 1, "text": "naïve <b>", "nested": {"list": [1, 2.5, None, True]}},
                )
            )
    return events


@contextmanager
def triggers_disabled() -> Iterator[None]:
    """Tamper as the database superuser would: with the append-only triggers not firing
    (replica mode, a superuser-only setting; ALTER TABLE ... DISABLE TRIGGER would do the same
    outside a test's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
