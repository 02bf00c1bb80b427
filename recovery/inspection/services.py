"""The body download: the only way a whole body leaves the console, masked unless the user holds
the unmask grant (issue 5, part 6), and audited (invariant 8) so a download in clear is on record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from recovery.audit.services import audit_record
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
    masked bytes (and a filename that says so). Records who took which body, and whether masked."""
    ensure_can(actor, Capability.VIEW)
    masker = masker_for(letter.dlq, actor)
    data = masker.body(bytes(letter.body or b""))
    filename = f"dead-letter-{letter.pk}{'.masked' if masker.active else ''}.bin"
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.LETTER_BODY_DOWNLOADED,
            obj=letter,
            summary=f"body of dead letter {letter.pk} downloaded{' masked' if masker.active else ' in clear'}",
            after={"bytes": len(data), "masked": masker.active},
        )
    return BodyDownload(data=data, masked=masker.active, filename=filename)
