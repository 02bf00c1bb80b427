"""The letter page and the body download (issue 5, parts 4 and 6): masked for every user without
the unmask grant (admins included), the body shown by kind and truncated, classification,
runbooks and timeline, in a bounded number of queries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from recovery.audit.services import audit_record
from recovery.masking import MASK
from recovery.models import (
    AuditAction,
    AuditEvent,
    CapturePass,
    CaptureTrigger,
    Category,
    ClassificationSource,
    DeadLetter,
    DeadLetterQueue,
    Disposition,
    Runbook,
    TriageAction,
    TriageActionItem,
    TriageActionKind,
)
from recovery.permissions import UNMASK_GROUP, Role
from tests.factories import (
    ClassificationRuleFactory,
    DeadLetterFactory,
    DeadLetterQueueFactory,
    FingerprintGroupFactory,
)

pytestmark = pytest.mark.django_db

SECRETS = [
    "Alice Liddell", "alice@example.com", "4111 1111 1111 1111", "top-secret-token", "bob@example.org",
    "carol@example.net", "4111111111111111", "dave@example.com", "erin@example.com", "frank@example.com",
]  # fmt: skip


@pytest.fixture
def dlq(db) -> DeadLetterQueue:
    return DeadLetterQueueFactory(
        name="orders-dlt", mask_json_paths=["$.customer.name"], mask_headers=["Authorization"]
    )


@pytest.fixture
def letter(dlq: DeadLetterQueue) -> DeadLetter:
    body = {"customer": {"name": "Alice Liddell", "email": "alice@example.com"}, "card": "4111 1111 1111 1111"}
    return DeadLetterFactory(
        dlq=dlq,
        body=json.dumps(body).encode(),
        headers={"Authorization": "Bearer top-secret-token", "x-note": "mail bob@example.org", "x-n": {"k": [1]}},
        properties={"reply_to": "carol@example.net"},
        error_class="PaymentDeclined",
        error_message="could not charge 4111111111111111 for dave@example.com",
        stack_trace="Traceback:\n  File charge.py, customer erin@example.com",
        failure_extras={"x-user": "frank@example.com"},
    )


def _client(make_user, *roles: Role, unmask: bool = False) -> Client:
    user = make_user(*roles)
    if unmask:
        user.groups.add(Group.objects.get_or_create(name=UNMASK_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.ADMIN, Role.VIEWER, Role.APPROVER])
def test_every_role_without_the_unmask_grant_sees_masked_fields(make_user, letter, role) -> None:
    html = _client(make_user, role).get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert 'data-testid="masked-note"' in html and MASK in html and f"{MASK}1111" in html
    for secret in SECRETS:
        assert secret not in html, secret
    assert "PaymentDeclined" in html  # what is not personal data stays readable


def test_an_operator_with_the_unmask_grant_sees_everything_in_clear(make_user, letter) -> None:
    html = _client(make_user, Role.OPERATOR, unmask=True).get(reverse("letter-detail", args=[letter.pk]))
    html = html.content.decode()
    assert 'data-testid="masked-note"' not in html and MASK not in html
    for secret in SECRETS:
        assert secret in html, secret


def test_the_unmask_grant_without_a_role_opens_nothing(make_user, letter) -> None:
    client = _client(make_user, unmask=True)
    assert client.get(reverse("letter-detail", args=[letter.pk])).status_code == 403
    assert client.get(reverse("letter-body", args=[letter.pk])).status_code == 403


def test_a_user_without_a_role_is_refused_and_anonymous_is_sent_to_login(client_for, letter) -> None:
    for url in (reverse("letter-detail", args=[letter.pk]), reverse("letter-body", args=[letter.pk])):
        assert client_for().get(url).status_code == 403
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_download_is_masked_and_says_so(make_user, letter) -> None:
    response = _client(make_user, Role.OPERATOR).get(reverse("letter-body", args=[letter.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="dead-letter-{letter.pk}.masked.bin"'
    assert response["Content-Type"] == "application/octet-stream"
    assert json.loads(response.content) == {"customer": {"name": MASK, "email": MASK}, "card": f"{MASK}1111"}
    event = AuditEvent.objects.get(action=AuditAction.LETTER_BODY_DOWNLOADED)
    assert event.object_id == str(letter.pk) and event.after["masked"] is True


def test_the_download_in_clear_is_the_stored_bytes_and_is_audited(make_user, letter) -> None:
    response = _client(make_user, Role.OPERATOR, unmask=True).get(reverse("letter-body", args=[letter.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="dead-letter-{letter.pk}.bin"'
    assert response.content == bytes(letter.body)
    assert AuditEvent.objects.get(action=AuditAction.LETTER_BODY_DOWNLOADED).after == {
        "bytes": len(letter.body),
        "masked": False,
    }


def test_json_is_pretty_printed_and_headers_are_a_table(client_for, letter) -> None:
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "Shown as json" in html
    assert f'"customer": {{\n    "name": "{MASK}"' in html.replace("&quot;", '"')
    assert "<code>x-note</code>" in html and f"mail {MASK}" in html
    assert "&quot;k&quot;: [\n    1\n  ]" in html  # a nested header value as pretty JSON


def test_a_binary_body_is_shown_as_a_hex_view(client_for, dlq) -> None:
    letter = DeadLetterFactory(dlq=dlq, body=b"\x00\x01\xffABC<script>x</script>" + bytes(range(256)) * 20)
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "Shown as binary (hex view of the first 4 KiB), truncated" in html
    assert "00000000  00 01 ff 41 42 43 3c 73  63 72 69 70 74 3e 78 3c  |...ABC&lt;script&gt;x&lt;|" in html
    assert "00001000\n" not in html and "00000ff0  " in html  # the first 4 KiB exactly
    assert "<script>x" not in html


def test_a_large_body_is_truncated_for_display_and_whole_in_the_download(client_for, dlq) -> None:
    body = json.dumps([{"n": i, "mail": f"user{i}@example.com"} for i in range(20_000)]).encode()
    letter = DeadLetterFactory(dlq=dlq, body=body)
    client = client_for(Role.VIEWER)
    html = client.get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "Shown as json, truncated, masked" in html and len(html) < 200_000
    assert "@example.com" not in html
    download = json.loads(client.get(reverse("letter-body", args=[letter.pk])).content)
    assert len(download) == 20_000 and download[-1] == {"n": 19_999, "mail": MASK}


def test_a_body_too_deep_to_locate_its_masked_paths_is_withheld(client_for, dlq) -> None:
    letter = DeadLetterFactory(
        dlq=dlq, body=('{"customer": {"name": "Alice Liddell"}, "x": ' + "[" * 10_000 + "]" * 10_000 + "}").encode()
    )
    client = client_for(Role.VIEWER)
    html = client.get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "Shown as withheld" in html and "Alice Liddell" not in html
    assert b"Alice Liddell" not in client.get(reverse("letter-body", args=[letter.pk])).content


def test_the_dlq_page_masks_the_letters_table(client_for, letter) -> None:
    html = client_for(Role.VIEWER).get(reverse("dlq-detail", args=[letter.dlq.pk])).content.decode()
    assert f"could not charge {MASK}1111 for {MASK}" in html and "dave@example.com" not in html


def _classified(dlq: DeadLetterQueue) -> DeadLetter:
    rule_book = Runbook.objects.create(title="Payment declines", owner="payments", body="Call **payments**.")
    group_book = Runbook.objects.create(title="Group notes", body="<script>window.__pwned=1</script> see `x`")
    rule = ClassificationRuleFactory(name="declines are business", category=Category.BUSINESS, runbook=rule_book)
    now = datetime.now(UTC)
    FingerprintGroupFactory(fingerprint="f" * 64, runbook=group_book)
    original = DeadLetterFactory(dlq=dlq)
    capture = CapturePass.objects.create(dlq=dlq, trigger=CaptureTrigger.SCHEDULER, state="succeeded")
    return DeadLetterFactory(
        dlq=dlq, fingerprint="f" * 64, category=Category.BUSINESS, disposition=Disposition.DISCARD,
        classified_by=ClassificationSource.RULE, rule=rule, classified_at=now, duplicate_of=original,
        expires_at=now + timedelta(hours=5), discarded_at=now, discard_reason="refunded by hand", capture_pass=capture,
    )  # fmt: skip


def _triage(letter: DeadLetter, n: int) -> None:
    for i in range(n):
        action = TriageAction.objects.create(
            kind=TriageActionKind.SET_CATEGORY, value="business", reason=f"reason {i}", actor_name="olivia",
            letter_count=3,
        )  # fmt: skip
        TriageActionItem.objects.create(action=action, letter=letter)
        with transaction.atomic():
            audit_record(actor="tester", action=AuditAction.LETTERS_TRIAGED, obj=letter, summary=f"triaged {i}")


def test_classification_runbooks_and_timeline_are_shown(client_for, dlq) -> None:
    letter = _classified(dlq)
    _triage(letter, 1)
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "Business" in html and "Discard" in html and "declines are business" in html
    assert f'href="/groups/{"f" * 64}/"' in html
    assert f'href="{reverse("letter-detail", args=[letter.duplicate_of_id])}"' in html
    assert "expires in 4\xa0hours" in html or "expires in 5\xa0hours" in html
    assert "refunded by hand" in html and 'data-testid="discarded"' in html
    assert "<strong>payments</strong>" in html and "<code>x</code>" in html  # runbook markdown, rule's then group's
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html and "<script>window" not in html
    assert "Set category → business" in html and "reason 0" in html and "olivia" in html
    assert "triaged 0" in html and "by capture pass #" in html and "Scheduler" in html


def test_an_expired_letter_says_so(client_for, dlq) -> None:
    letter = DeadLetterFactory(dlq=dlq, body=b"x", expires_at=datetime.now(UTC) - timedelta(minutes=1))
    assert "expired (" in client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk])).content.decode()


def test_the_page_reads_a_fixed_number_of_queries_whatever_the_history(client_for, dlq) -> None:
    client = client_for(Role.VIEWER)
    quiet = _classified(dlq)
    busy = DeadLetterFactory(dlq=dlq, fingerprint=quiet.fingerprint, rule=quiet.rule, capture_pass=quiet.capture_pass)
    _triage(busy, 25)
    client.get(reverse("letter-detail", args=[quiet.pk]))  # the session and user, loaded once
    counts = []
    for letter in (quiet, busy):
        with CaptureQueriesContext(connection) as queries:
            html = client.get(reverse("letter-detail", args=[letter.pk])).content.decode()
        counts.append(len(queries))
    assert "reason 24" in html and "triaged 24" in html
    assert counts[0] == counts[1] <= 12


def test_an_admin_configures_masks_in_the_dlq_form_and_it_is_audited(client_for, dlq) -> None:
    client = client_for(Role.ADMIN)
    form = {"broker": dlq.broker.pk, "name": dlq.name, "address": dlq.address, "consumer_group": "g",
            "capture_mode": "offsets", "capture_interval": 60, "capture_batch_size": 100, "sources": "[]",
            "header_mapping": "{}", "enabled": "on", "mask_json_paths": "$.customer.email\r\n\r\n$.items[*].card\n",
            "mask_headers": "Authorization\nX-Api-Key", "mask_emails": "on"}  # fmt: skip
    response = client.post(reverse("dlq-edit", args=[dlq.pk]), form)
    assert response.status_code == 302, response.content.decode()
    dlq.refresh_from_db()
    assert dlq.mask_json_paths == ["$.customer.email", "$.items[*].card"]
    assert dlq.mask_headers == ["Authorization", "X-Api-Key"]
    assert dlq.mask_emails and not dlq.mask_card_numbers
    event = AuditEvent.objects.get(action=AuditAction.DLQ_MASKS_UPDATED)
    assert event.before["mask_card_numbers"] is True and event.after["mask_card_numbers"] is False
    page = client.get(reverse("dlq-edit", args=[dlq.pk])).content.decode()
    assert "$.customer.email\n$.items[*].card</textarea>" in page and 'data-testid="masks"' in page


def test_a_bad_mask_path_is_refused_with_its_line(client_for, dlq) -> None:
    form = {"broker": dlq.broker.pk, "name": dlq.name, "address": dlq.address, "consumer_group": "g",
            "capture_mode": "offsets", "capture_interval": 60, "capture_batch_size": 100, "sources": "[]",
            "header_mapping": "{}", "mask_json_paths": "$.ok\ncustomer.email"}  # fmt: skip
    response = client_for(Role.ADMIN).post(reverse("dlq-edit", args=[dlq.pk]), form)
    assert response.status_code == 200 and "line 2: &#x27;customer.email&#x27;: a path starts with $" in (
        response.content.decode()
    )
    dlq.refresh_from_db()
    assert dlq.mask_json_paths == ["$.customer.name"]
