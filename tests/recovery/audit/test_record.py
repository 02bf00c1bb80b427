"""audit_record writes a gapless hash chain inside the caller's transaction; the database refuses
to change it; sign-ins and sign-outs are recorded with the request's context."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction
from django.test import Client
from django.urls import reverse

from recovery.audit.canonical import GENESIS_HASH
from recovery.audit.services import audit_checkpoint_record, audit_record
from recovery.audit.verification import verify_chain
from recovery.models import AuditAction, AuditCheckpoint, AuditEvent
from recovery.permissions import Role
from tests.factories import PASSWORD
from tests.recovery.audit.helpers import record_events, sql

pytestmark = pytest.mark.django_db


def test_events_form_a_chain_from_genesis() -> None:
    events = record_events(3)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    assert verify_chain().ok


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_write_outside_a_transaction() -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(actor="test", action=AuditAction.LOGIN, summary="x")


def test_a_rolled_back_change_leaves_no_event_and_no_gap() -> None:
    record_events(1)
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        audit_record(actor="test", action=AuditAction.LOGIN, summary="rolled back")
        1 / 0  # noqa: B018
    record_events(1)
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2]
    assert not AuditEvent.objects.filter(summary="rolled back").exists()
    assert verify_chain().ok


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE recovery_auditevent SET summary = 'edited'",
        "DELETE FROM recovery_auditevent",
        "UPDATE recovery_auditcheckpoint SET seq = 99",
        "DELETE FROM recovery_auditcheckpoint",
    ],
)
def test_the_database_refuses_to_change_audit_rows(statement: str) -> None:
    record_events(2)
    audit_checkpoint_record(force=True)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        sql(statement)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("table", ["recovery_auditevent", "recovery_auditcheckpoint"])
def test_the_database_refuses_to_truncate_audit_tables(table: str) -> None:
    record_events(2)
    audit_checkpoint_record(force=True)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        sql(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.count() == 2


def test_the_orm_cannot_edit_or_delete_an_event_either() -> None:
    event = record_events(1)[0]
    event.summary = "edited"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()


def test_a_checkpoint_is_only_taken_when_the_head_moved(settings) -> None:
    settings.AUDIT_CHECKPOINT_INTERVAL = 0
    assert audit_checkpoint_record() is None  # empty chain
    record_events(2)
    first = audit_checkpoint_record()
    assert first is not None and first.seq == 2
    assert audit_checkpoint_record() is None
    record_events(1)
    assert audit_checkpoint_record().seq == 3
    assert AuditCheckpoint.objects.count() == 2


def test_sign_in_sign_out_and_refused_sign_in_are_recorded_with_the_request(make_user) -> None:
    make_user(Role.VIEWER, username="vera")
    client = Client(HTTP_USER_AGENT="pytest-agent", HTTP_X_REQUEST_ID="req-12345678")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    client.post(reverse("login"), {"username": "vera", "password": "wrong"})
    client.post(reverse("login"), {"username": "vera", "password": PASSWORD}, HTTP_TRACEPARENT=traceparent)
    client.post(reverse("logout"))
    failed, login, logout = AuditEvent.objects.order_by("seq")
    assert failed.action == AuditAction.LOGIN_FAILED and failed.actor_id is None
    assert failed.after == {"username": "vera"} and "wrong" not in str(failed.after)
    assert login.action == AuditAction.LOGIN and login.actor_name == "vera"
    assert login.client_ip == "127.0.0.1" and login.user_agent == "pytest-agent"
    assert login.request_id == "req-12345678"
    assert login.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert logout.action == AuditAction.LOGOUT and logout.actor_name == "vera"


def test_a_forged_request_id_is_replaced(make_user) -> None:
    make_user(Role.VIEWER, username="vera")
    response = Client(HTTP_X_REQUEST_ID="<script>").post(reverse("login"), {"username": "vera", "password": "x"})
    event = AuditEvent.objects.get()
    assert event.request_id == response["X-Request-ID"] and len(event.request_id) == 32


def test_hostile_text_is_stored_safely() -> None:
    with transaction.atomic():
        event = audit_record(
            actor="test", action=AuditAction.LOGIN, summary="a\x00b" + "x" * 600, after={"h": "\x00<script>"}
        )
    event.refresh_from_db()
    assert len(event.summary) == 500 and "\x00" not in event.summary
    assert event.after == {"h": "\ufffd<script>"}
    assert verify_chain().ok
