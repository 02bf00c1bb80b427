"""Oversize bodies parked in object storage (the real LocalStack S3 of .local/env): the letter page
offers them for download with the same capability check, masks and audit as a stored body; the
bytes are checked against the size and SHA-256 recorded at capture, and a body that does not
match is not served. (Parking during capture, per broker: tests/brokers/test_contract.py.)"""

from __future__ import annotations

import hashlib

import pytest
from django.urls import reverse

from recovery.capture.parking import NOT_CONFIGURED, ParkingError, body_fetch, body_park
from recovery.models import AuditAction, AuditEvent, DeadLetterState
from recovery.permissions import Role
from tests.factories import DeadLetterFactory
from tests.namespace import unique

pytestmark = pytest.mark.django_db


@pytest.fixture
def body() -> bytes:
    """A body of this test's own (keys are content addressed) with an address the masks cover."""
    return f"customer ada@example.org {unique('note')} ".encode() + b"x" * 5000


@pytest.fixture
def parked_letter(dlq, body):
    sha256 = hashlib.sha256(body).hexdigest()
    parked = body_park(dlq_id=dlq.pk, data=body, sha256=sha256)
    return DeadLetterFactory(
        dlq=dlq,
        body=b"",
        body_size=len(body),
        content_hash=sha256,
        state=DeadLetterState.OVERSIZE,
        parked_bucket=parked.bucket,
        parked_key=parked.key,
    )


def test_a_parked_body_comes_back_byte_for_byte(parked_letter, body) -> None:
    data = body_fetch(
        bucket=parked_letter.parked_bucket,
        key=parked_letter.parked_key,
        size=parked_letter.body_size,
        sha256=parked_letter.content_hash,
    )
    assert data == body


def test_the_letter_page_says_where_a_parked_body_lies_and_links_its_download(client_for, parked_letter) -> None:
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[parked_letter.pk])).content.decode()
    assert 'data-testid="parked"' in html and parked_letter.parked_key in html
    assert reverse("letter-body", args=[parked_letter.pk]) in html and "(masked)" in html
    assert "stays on the broker" not in html and "ada@example.org" not in html


def test_a_parked_body_is_downloaded_masked_without_the_unmask_grant_and_audited(client_for, parked_letter) -> None:
    response = client_for(Role.VIEWER).get(reverse("letter-body", args=[parked_letter.pk]))
    assert response.status_code == 200
    assert b"ada@example.org" not in response.content and response.content.endswith(b"x" * 5000)
    assert response["Content-Disposition"].endswith('.masked.bin"')
    event = AuditEvent.objects.get(action=AuditAction.LETTER_BODY_DOWNLOADED, object_id=str(parked_letter.pk))
    assert event.after["masked"] is True
    assert event.after["parked"] == f"s3://{parked_letter.parked_bucket}/{parked_letter.parked_key}"


def test_a_parked_body_that_does_not_match_its_recorded_hash_is_not_served(client_for, parked_letter) -> None:
    body_park(dlq_id=parked_letter.dlq_id, data=b"something else", sha256=parked_letter.content_hash)  # tampered
    client = client_for(Role.VIEWER)
    response = client.get(reverse("letter-body", args=[parked_letter.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("letter-detail", args=[parked_letter.pk])
    assert "does not match the size and SHA-256 recorded at capture" in response.content.decode()
    assert not AuditEvent.objects.filter(action=AuditAction.LETTER_BODY_DOWNLOADED).exists()


def test_parking_without_a_bucket_is_refused_so_the_message_stays_on_the_broker(settings, dlq) -> None:
    settings.RECOVERY_PARKING_S3_BUCKET = ""
    with pytest.raises(ParkingError, match="not configured"):
        body_park(dlq_id=dlq.pk, data=b"x" * 10, sha256=hashlib.sha256(b"x" * 10).hexdigest())
    assert "RECOVERY_PARKING_S3_BUCKET" in NOT_CONFIGURED
