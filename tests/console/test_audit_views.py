"""The audit screens: list with filters and paging, streamed exports (POST only), the
'Verify chain' action run by a real RQ worker, and per-object history."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from recovery.audit.export import verify_export_file
from recovery.models import AuditAction, AuditEvent, AuditVerification, JobState, VerificationOutcome
from recovery.permissions import Role
from tests.helpers import run_queued_jobs
from tests.recovery.audit.helpers import record_events, sql, triggers_disabled


@pytest.mark.django_db
def test_the_audit_page_lists_newest_first_and_pages_by_seq(client_for) -> None:
    client = client_for(Role.VIEWER)  # signing in is event #1
    record_events(60)
    first = client.get(reverse("audit")).content.decode()
    assert re.findall(r'<tr data-seq="(\d+)"', first) == [str(n) for n in range(61, 11, -1)]
    assert "before=12" in first
    older = client.get(reverse("audit"), {"before": "12"}).content.decode()
    assert re.findall(r'<tr data-seq="(\d+)"', older) == [str(n) for n in range(11, 0, -1)]
    assert "before=" not in older


@pytest.mark.django_db
def test_filters_narrow_the_list(client_for) -> None:
    record_events(3)
    client = client_for(Role.VIEWER)
    html = client.get(reverse("audit"), {"action": AuditAction.USER_ROLES_CHANGED}).content.decode()
    assert "No event matches" in html
    html = client.get(reverse("audit"), {"object_type": "recovery.broker", "object_id": "1"}).content.decode()
    assert 'data-seq="2"' in html and 'data-seq="1"' not in html


@pytest.mark.django_db
def test_hostile_audit_text_renders_escaped(client_for) -> None:
    from django.db import transaction

    from recovery.audit.services import audit_record

    with transaction.atomic():
        audit_record(actor="x", action=AuditAction.LOGIN_FAILED, summary="<script>alert(1)</script>")
    html = client_for(Role.VIEWER).get(reverse("audit")).content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_streams_a_verifiable_file_and_is_audited(client_for, tmp_path, settings, fmt) -> None:
    record_events(4)
    response = client_for(Role.VIEWER).post(reverse("audit-export"), {"format": fmt, "actor": ""})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].endswith(f'.{fmt}"')
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(b"".join(response.streaming_content))
    report = verify_export_file(path, settings.AUDIT_HMAC_KEY)
    assert report.ok and report.full_chain, report.message
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).count() == 1


@pytest.mark.django_db
def test_export_rejects_get_and_requires_csrf(make_user) -> None:
    user = make_user(Role.VIEWER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(reverse("audit-export")).status_code == 405
    assert client.post(reverse("audit-export"), {"format": "csv"}).status_code == 403
    assert client.post(reverse("audit-verify")).status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).exists()


@pytest.mark.django_db
def test_a_bad_export_format_is_refused_with_a_message(client_for) -> None:
    response = client_for(Role.VIEWER).post(reverse("audit-export"), {"format": "xml"}, follow=True)
    assert "unknown export format" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_verify_chain_runs_in_a_worker_and_shows_the_result(client_for, test_redis, settings) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    record_events(5)
    client = client_for(Role.VIEWER)
    client.post(reverse("audit-verify"))
    verification = AuditVerification.objects.get()
    assert verification.state == JobState.QUEUED
    assert "every 2s" in client.get(reverse("audit-verification")).content.decode()
    again = client.post(reverse("audit-verify"), follow=True).content.decode()
    assert "already queued or running" in again
    events_before_run = AuditEvent.objects.count()
    run_queued_jobs("bulk")
    verification.refresh_from_db()
    assert verification.state == JobState.SUCCEEDED and verification.outcome == VerificationOutcome.PASSED
    assert verification.processed == events_before_run
    partial = client.get(reverse("audit-verification")).content.decode()
    assert "Chain intact" in partial and "every 2s" not in partial
    assert AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED, actor_name="system:verifier").exists()


@pytest.mark.django_db(transaction=True)
def test_a_broken_chain_shows_the_first_broken_event(client_for, test_redis, settings) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    record_events(5)
    with triggers_disabled():
        sql("UPDATE recovery_auditevent SET summary = 'edited' WHERE seq = 3")
    client = client_for(Role.VIEWER)
    client.post(reverse("audit-verify"))
    run_queued_jobs("bulk")
    partial = client.get(reverse("audit-verification")).content.decode()
    assert "Chain broken" in partial and "First broken event: #3" in partial


@pytest.mark.django_db
def test_object_history_shows_what_happened_to_a_user(client_for, make_user) -> None:
    admin_client = client_for(Role.ADMIN)
    target = make_user(Role.VIEWER, username="tina")
    admin_client.post(reverse("user-roles-update", args=[target.pk]), {"roles": ["operator"]})
    html = client_for(Role.VIEWER).get(reverse("audit-history", args=["auth.user", target.pk])).content.decode()
    assert "Roles changed" in html and "roles of tina: operator" in html
    assert "&quot;viewer&quot;" in html  # the before state, escaped JSON
