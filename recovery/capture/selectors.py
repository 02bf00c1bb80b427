"""Reads for the dead-letter screens. Bodies are deferred in lists; previews are bounded and
never raise on hostile bytes (invariant 10)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db.models import Count, Max, OuterRef, QuerySet, Subquery

from recovery.models import CapturePass, DeadLetter, DeadLetterQueue

PREVIEW_BYTES = 64 * 1024
HEX_BYTES = 4 * 1024


def dlq_list() -> QuerySet[DeadLetterQueue]:
    """Every DLQ with its captured count, newest capture and latest pass."""
    latest = CapturePass.objects.filter(dlq=OuterRef("pk")).order_by("-created_at")
    return (
        DeadLetterQueue.objects.select_related("broker")
        .annotate(
            letter_count=Count("letters"),
            last_captured_at=Max("letters__captured_at"),
            last_pass_state=Subquery(latest.values("state")[:1]),
            last_pass_error=Subquery(latest.values("error")[:1]),
        )
        .order_by("name")
    )


def recent_letters(*, dlq: DeadLetterQueue | None = None, limit: int = 50) -> QuerySet[DeadLetter]:
    letters = DeadLetter.objects.select_related("dlq", "dlq__broker").defer("body", "stack_trace")
    if dlq is not None:
        letters = letters.filter(dlq=dlq)
    return letters.order_by("-captured_at", "-id")[:limit]


def recent_passes(*, dlq: DeadLetterQueue, limit: int = 10) -> QuerySet[CapturePass]:
    return CapturePass.objects.filter(dlq=dlq).order_by("-created_at")[:limit]


@dataclass(frozen=True)
class BodyPreview:
    kind: str  # "json", "text", "binary" or "empty"
    text: str
    truncated: bool
    size: int


def body_preview(letter: DeadLetter) -> BodyPreview:
    """At most PREVIEW_BYTES of the body: pretty JSON when it parses, text when it decodes as
    UTF-8, else a hex dump. The template escapes whatever this returns."""
    body = bytes(letter.body or b"")
    size = letter.body_size
    if not body:
        return BodyPreview("empty", "", size > 0, size)
    head = body[:PREVIEW_BYTES]
    truncated = len(body) > PREVIEW_BYTES
    if not truncated:
        try:
            parsed = json.loads(head)
            return BodyPreview("json", json.dumps(parsed, indent=2, ensure_ascii=False)[:PREVIEW_BYTES], False, size)
        except (ValueError, RecursionError):
            pass
    try:
        return BodyPreview("text", head.decode("utf-8"), truncated, size)
    except UnicodeDecodeError as exc:
        if truncated and exc.start > len(head) - 4:  # cut inside a multi-byte character
            return BodyPreview("text", head[: exc.start].decode("utf-8"), True, size)
    return BodyPreview("binary", _hexdump(body[:HEX_BYTES]), len(body) > HEX_BYTES, size)


def _hexdump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  {text}")
    return "\n".join(lines)
