"""Tampering as a database superuser (triggers disabled) is detected, with the first broken
sequence number reported: edit, delete, insert, reorder, and a rewrite that recomputes every
hash (caught by the signed checkpoint)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from recovery.audit.canonical import event_content, event_hash
from recovery.audit.services import audit_checkpoint_record
from recovery.audit.verification import DB_FIELDS, content_from_row, verify_chain
from recovery.models import AuditEvent
from tests.recovery.audit.helpers import record_events, sql, triggers_disabled

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain() -> list[AuditEvent]:
    return record_events(10)


def test_an_untouched_chain_verifies(chain) -> None:
    audit_checkpoint_record(force=True)
    report = verify_chain()
    assert report.ok and report.checked == 10 and report.checkpoints_checked == 1
    call_command("audit_verify")


def test_an_edited_event_is_detected(chain) -> None:
    with triggers_disabled():
        sql("UPDATE recovery_auditevent SET summary = 'nothing happened' WHERE seq = 4")
    report = verify_chain()
    assert not report.ok and report.first_broken_seq == 4
    assert "changed" in report.message


def test_an_edited_json_payload_is_detected(chain) -> None:
    with triggers_disabled():
        sql("""UPDATE recovery_auditevent SET "after" = '{"n": 99}' WHERE seq = 7""")
    assert verify_chain().first_broken_seq == 7


def test_a_deleted_event_is_detected(chain) -> None:
    with triggers_disabled():
        sql("DELETE FROM recovery_auditevent WHERE seq = 5")
    report = verify_chain()
    assert report.first_broken_seq == 5 and "missing" in report.message


def test_a_deleted_last_event_is_caught_by_the_checkpoint(chain) -> None:
    audit_checkpoint_record(force=True)
    with triggers_disabled():
        sql("DELETE FROM recovery_auditevent WHERE seq = 10")
    # the chain 1..9 is intact in itself; the signed head at #10 is what no longer exists
    report = verify_chain()
    assert not report.ok and report.first_broken_seq == 10
    assert "ends before #10" in report.message


def test_an_inserted_event_is_detected(chain) -> None:
    fourth = AuditEvent.objects.get(seq=4)
    with triggers_disabled():
        sql("UPDATE recovery_auditevent SET seq = -seq WHERE seq >= 5")
        sql("UPDATE recovery_auditevent SET seq = -seq + 1 WHERE seq < 0")
        forged = event_content(
            seq=5, at=fourth.at, actor_id=None, actor_name="system:test", client_ip="", user_agent="",
            request_id="", trace_id="", action="broker.configured", object_type="", object_id="",
            summary="forged", before=None, after=None, reason="", prev_hash=fourth.hash,
        )  # fmt: skip
        sql(
            "INSERT INTO recovery_auditevent (seq, at, actor_name, client_ip, user_agent, request_id, trace_id,"
            " action, object_type, object_id, summary, reason, prev_hash, hash)"
            " VALUES (5, %s, 'system:test', '', '', '', '', 'broker.configured', '', '', 'forged', '', %s, %s)",
            [fourth.at, fourth.hash, event_hash(forged)],
        )
    report = verify_chain()
    # the forged #5 links to #4 and hashes correctly; the event after it no longer links
    assert not report.ok and report.first_broken_seq == 6
    assert "deleted, inserted or moved" in report.message


def test_reordered_events_are_detected(chain) -> None:
    with triggers_disabled():
        sql("UPDATE recovery_auditevent SET seq = 0 WHERE seq = 6")
        sql("UPDATE recovery_auditevent SET seq = 6 WHERE seq = 7")
        sql("UPDATE recovery_auditevent SET seq = 7 WHERE seq = 0")
    report = verify_chain()
    assert not report.ok and report.first_broken_seq == 6


def test_a_rewrite_that_recomputes_every_hash_is_caught_by_the_signed_checkpoint() -> None:
    record_events(8)
    audit_checkpoint_record(force=True)
    record_events(2)
    with triggers_disabled():
        sql("UPDATE recovery_auditevent SET summary = 'rewritten' WHERE seq = 5")
        prev = AuditEvent.objects.get(seq=4).hash
        for row in AuditEvent.objects.filter(seq__gte=5).order_by("seq").values_list(*DB_FIELDS):
            content, _ = content_from_row(row)
            content["prev_hash"] = prev
            prev = event_hash(content)
            sql("UPDATE recovery_auditevent SET prev_hash = %s, hash = %s WHERE seq = %s",
                [content["prev_hash"], prev, content["seq"]])  # fmt: skip
    report = verify_chain()
    assert not report.ok and report.first_broken_seq == 8
    assert "checkpoint" in report.message


def test_a_forged_checkpoint_is_detected(chain) -> None:
    audit_checkpoint_record(force=True)
    with triggers_disabled():
        sql("UPDATE recovery_auditcheckpoint SET signature = %s", ["0" * 64])
    report = verify_chain()
    assert not report.ok and "not signed by the audit key" in report.message


def test_the_command_fails_and_names_the_first_broken_event(chain) -> None:
    with triggers_disabled(), transaction.atomic():
        sql("DELETE FROM recovery_auditevent WHERE seq = 3")
    with pytest.raises(CommandError, match="BROKEN at #3"):
        call_command("audit_verify")
