from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from console.forms import AuditFilterForm
from recovery.audit.export import export_lines
from recovery.audit.selectors import audit_event_page, audit_timeline, latest_verification
from recovery.audit.services import audit_export_start, audit_verification_request
from recovery.errors import RecoveryError
from recovery.permissions import Capability, capability_required

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


@capability_required(Capability.VIEW)
def audit_page(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    before = request.GET.get("before", "")
    events, next_before = audit_event_page(filters=form.filters(), before_seq=int(before) if before.isdigit() else None)
    query = request.GET.copy()
    query.pop("before", None)
    return render(
        request,
        "console/audit.html",
        {
            "form": form,
            "events": events,
            "next_before": next_before,
            "query": query.urlencode(),
            "verification": latest_verification(),
        },
    )


@require_POST
@capability_required(Capability.VIEW)
def audit_export(request: HttpRequest) -> HttpResponse:
    """Stream the filtered trail; the export is audited before the first byte is sent."""
    form = AuditFilterForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Export not started: {form.errors.as_text()}")
        return redirect("audit")
    fmt = request.POST.get("format", "jsonl")
    try:
        plan = audit_export_start(actor=request.user, filters=form.filters(), fmt=fmt)
    except RecoveryError as exc:
        messages.error(request, str(exc))
        return redirect("audit")
    response = StreamingHttpResponse(export_lines(plan), content_type=CONTENT_TYPES[fmt])
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


@require_POST
@capability_required(Capability.VIEW)
def audit_verify(request: HttpRequest) -> HttpResponse:
    try:
        audit_verification_request(actor=request.user)
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Chain verification queued; the result appears below.")
    return redirect("audit")


@capability_required(Capability.VIEW)
def audit_verification_status(request: HttpRequest) -> HttpResponse:
    return render(request, "console/partials/audit_verification.html", {"verification": latest_verification()})


@capability_required(Capability.VIEW)
def object_history(request: HttpRequest, object_type: str, object_id: str) -> HttpResponse:
    events = audit_timeline(object_type=object_type, object_id=object_id)
    return render(
        request,
        "console/audit_history.html",
        {"events": events, "object_type": object_type, "object_id": object_id},
    )
