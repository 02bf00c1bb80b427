"""Reads for a DLQ's page: its latest letters (bodies deferred) and capture passes. Letter bodies
are shown by recovery.inspection (bounded, masked, never raising on hostile bytes)."""

from __future__ import annotations

from django.db.models import QuerySet

from recovery.models import CapturePass, DeadLetter, DeadLetterQueue


def recent_letters(*, dlq: DeadLetterQueue | None = None, limit: int = 50) -> QuerySet[DeadLetter]:
    letters = DeadLetter.objects.select_related("dlq", "dlq__broker").defer("body", "stack_trace")
    if dlq is not None:
        letters = letters.filter(dlq=dlq)
    return letters.order_by("-captured_at", "-id")[:limit]


def recent_passes(*, dlq: DeadLetterQueue, limit: int = 10) -> QuerySet[CapturePass]:
    return CapturePass.objects.filter(dlq=dlq).order_by("-created_at")[:limit]
