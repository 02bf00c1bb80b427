"""Exports stream every matching event with its hashes and end with a signed trailer; the
offline check accepts an untouched file and rejects any edit, removal, truncation or forgery."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from recovery.audit.export import AuditFilters, export_lines, verify_export_file
from recovery.audit.services import audit_export_start, audit_record
from recovery.models import AuditAction, AuditEvent
from tests.recovery.audit.helpers import record_events

pytestmark = pytest.mark.django_db

HOSTILE = 'line one\nline two, "quoted", =cmd|calc, naïve ✓ \x00 <script>alert(1)</script>'


def _export(tmp_path: Path, fmt: str, **filters: str) -> Path:
    path = tmp_path / f"audit.{fmt}"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in filters.items()]
    call_command("audit_export", f"--format={fmt}", f"--output={path}", *args, stderr=io.StringIO())
    return path


def _in_trailer(data: bytes, old: bytes, new: bytes) -> bytes:
    cut = data.rstrip(b"\n").rfind(b"\n") + 1
    return data[:cut] + data[cut:].replace(old, new)


@pytest.fixture
def trail() -> None:
    record_events(5)
    with transaction.atomic():
        audit_record(actor="mallory", action=AuditAction.LOGIN_FAILED, summary=HOSTILE, reason=HOSTILE,
                     after={"username": HOSTILE, "n": [1.5, None]})  # fmt: skip


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_untouched_export_verifies_as_the_whole_chain(trail, tmp_path, settings, fmt) -> None:
    path = _export(tmp_path, fmt)
    report = verify_export_file(path, settings.AUDIT_HMAC_KEY)
    assert report.ok, report.message
    assert report.full_chain and report.events == 7  # 6 events + the export's own event
    out = io.StringIO()
    call_command("audit_verify", f"--file={path}", stdout=out)
    assert out.getvalue().startswith("OK")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_each_line_carries_its_hashes(trail, tmp_path, fmt) -> None:
    text = _export(tmp_path, fmt).read_text()
    for event in AuditEvent.objects.all():
        assert event.hash in text and event.prev_hash in text


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda b: b.replace(b"event 2", b"event X", 1), "altered, removed or added"),
        (lambda b: b"".join(line for i, line in enumerate(b.splitlines(True)) if i != 2), "altered, removed or added"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: _in_trailer(b, b"exported_at", b"exported_by"), "trailer was altered"),
    ],
    ids=["edited", "line removed", "truncated", "trailer edited"],
)
def test_a_tampered_file_is_rejected(trail, tmp_path, settings, fmt, tamper, message) -> None:
    path = _export(tmp_path, fmt)
    path.write_bytes(tamper(path.read_bytes()))
    report = verify_export_file(path, settings.AUDIT_HMAC_KEY)
    assert not report.ok and message in report.message
    with pytest.raises(CommandError, match="BROKEN"):
        call_command("audit_verify", f"--file={path}")


def test_a_file_checked_with_another_key_is_rejected(trail, tmp_path) -> None:
    report = verify_export_file(_export(tmp_path, "jsonl"), b"another-key-" + b"x" * 40)
    assert not report.ok and "another audit key" in report.message


def test_a_filtered_export_holds_only_matching_events_and_verifies(trail, tmp_path, settings) -> None:
    path = _export(tmp_path, "jsonl", actor="system:mallory")
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    assert [e["actor_name"] for e in events] == ["system:mallory"]
    assert events[0]["summary"] == HOSTILE.replace("\x00", "\ufffd")
    report = verify_export_file(path, settings.AUDIT_HMAC_KEY)
    assert report.ok and not report.full_chain and "filtered" in report.message


def test_who_exported_what_is_audited(trail, admin_user) -> None:
    plan = audit_export_start(actor=admin_user, filters=AuditFilters(action="auth.login_failed"), fmt="csv")
    event = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORTED)
    assert event.actor_name == admin_user.username
    assert event.after == {"format": "csv", "filters": {"action": "auth.login_failed"}}
    assert plan.checkpoint.seq == event.seq


def test_an_export_stops_at_its_signed_head(trail, settings) -> None:
    plan = audit_export_start(actor="test", filters=AuditFilters(), fmt="jsonl")
    record_events(3)  # written while the file streams: not part of this export
    lines = list(export_lines(plan))
    trailer = json.loads(lines[-1])["trailer"]
    assert trailer["last_seq"] == plan.checkpoint.seq and trailer["count"] == len(lines) - 1


def test_an_unknown_format_is_refused(admin_user) -> None:
    from recovery.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown export format"):
        audit_export_start(actor=admin_user, filters=AuditFilters(), fmt="xml")
    assert not AuditEvent.objects.exists()
