"""The body download: the only way a whole body leaves the console, masked unless the user holds
the unmask grant (issue 5, part 6), and audited (invariant 8) so a download in clear is on record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from recovery.audit.services import audit_record
from recovery.capture.parking import body_fetch
from recovery.masking import masker_for
from recovery.models import AuditAction, DeadLetter
from recovery.permissions import Capability, ensure_can


@dataclass(frozen=True)
class BodyDownload:
    data: bytes
    masked: bool
    filename: str


def letter_body_download(*, actor: Any, letter: DeadLetter) -> BodyDownload:
    """The whole body as ``actor`` may take it: the stored bytes with the unmask grant, else the
    masked bytes (and a filename that says so). Records who took which body, and whether masked.

    An oversize letter's body is read back from object storage (recovery.capture.parking) and
    checked against the size and SHA-256 recorded at capture, then masked by the same rules
    (invariant 11); a body that cannot be read or does not match raises ParkingError and nothing
    is served."""
    ensure_can(actor, Capability.VIEW)
    masker = masker_for(letter.dlq, actor)
    where = f"s3://{letter.parked_bucket}/{letter.parked_key}" if letter.parked_key else ""
    if where:
        stored = body_fetch(
            bucket=letter.parked_bucket, key=letter.parked_key, size=letter.body_size, sha256=letter.content_hash
        )
    else:
        stored = bytes(letter.body or b"")
    data = masker.body(stored)
    filename = f"dead-letter-{letter.pk}{'.masked' if masker.active else ''}.bin"
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.LETTER_BODY_DOWNLOADED,
            obj=letter,
            summary=f"body of dead letter {letter.pk} downloaded{' masked' if masker.active else ' in clear'}"
            + (" from object storage" if where else ""),
            after={"bytes": len(data), "masked": masker.active, **({"parked": where} if where else {})},
        )
    return BodyDownload(data=data, masked=masker.active, filename=filename)
