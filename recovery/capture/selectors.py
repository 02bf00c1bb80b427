"""Reads for a DLQ's page: its latest letters (bodies deferred) and capture passes. Letter bodies
are shown by recovery.inspection (bounded, masked, never raising on hostile bytes)."""

from __future__ import annotations

from django.db.models import QuerySet

from recovery.models import OPEN_STATES, CapturePass, DeadLetter, DeadLetterQueue


def recent_letters(
    *, dlq: DeadLetterQueue | None = None, limit: int = 50, open_only: bool = False
) -> QuerySet[DeadLetter]:
    """The newest letters; ``open_only``: open work only (issue 15; a partial index serves it)."""
    letters = DeadLetter.objects.select_related("dlq", "dlq__broker").defer("body", "stack_trace")
    if dlq is not None:
        letters = letters.filter(dlq=dlq)
    if open_only:
        letters = letters.filter(state__in=OPEN_STATES)
    return letters.order_by("-captured_at", "-id")[:limit]


def recent_passes(*, dlq: DeadLetterQueue, limit: int = 10) -> QuerySet[CapturePass]:
    return CapturePass.objects.filter(dlq=dlq).order_by("-created_at")[:limit]
