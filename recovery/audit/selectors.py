"""Audit reads for the console."""

from __future__ import annotations

from django.db.models import QuerySet

from recovery.audit.export import AuditFilters
from recovery.models import AuditEvent, AuditVerification

PAGE_SIZE = 50


def audit_event_page(*, filters: AuditFilters, before_seq: int | None = None) -> tuple[list[AuditEvent], int | None]:
    """One page of events, newest first, by keyset on seq (no OFFSET, no COUNT over the table).
    Returns the events and the seq to pass as ``before_seq`` for the next page, or None."""
    events = filters.apply(AuditEvent.objects.all())
    if before_seq is not None:
        events = events.filter(seq__lt=before_seq)
    page = list(events.order_by("-seq")[: PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    return page, (page[-1].seq if more else None)


def audit_timeline(*, object_type: str, object_id: str, limit: int = 100) -> QuerySet[AuditEvent]:
    """Everything that happened to one object, newest first (shown on its detail page)."""
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("-seq")[:limit]


def latest_verification() -> AuditVerification | None:
    return AuditVerification.objects.select_related("requested_by").order_by("-requested_at").first()
