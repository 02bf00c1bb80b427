from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from recovery.audit.selectors import audit_timeline
from recovery.brokers.registry import broker_session
from recovery.capture.selectors import recent_letters, recent_passes
from recovery.capture.services import capture_pass_request
from recovery.errors import RecoveryError
from recovery.inspection.display import body_display
from recovery.inspection.selectors import letter_for_detail, letter_group_and_runbooks, letter_timeline
from recovery.inspection.services import letter_body_download
from recovery.letters.identity import idempotency_key
from recovery.masking import mask_letter, masker_for
from recovery.models import DeadLetter, DeadLetterQueue
from recovery.permissions import Capability, capability_required, user_can


@capability_required(Capability.VIEW)
def dlq_detail(request: HttpRequest, dlq_id: int) -> HttpResponse:
    """A DLQ: its capture passes and newest letters, open ones unless ``work=all`` (issue 15)."""
    dlq = get_object_or_404(DeadLetterQueue.objects.select_related("broker"), pk=dlq_id)
    work = "all" if request.GET.get("work") == "all" else "open"
    return render(
        request,
        "console/dlq.html",
        {
            "dlq": dlq,
            "passes": recent_passes(dlq=dlq),
            "letters": recent_letters(dlq=dlq, open_only=work == "open"),
            "work": work,
            "can_capture": user_can(request.user, Capability.CAPTURE),
            "events": audit_timeline(object_type="recovery.deadletterqueue", object_id=str(dlq.pk)),
        },
    )


@capability_required(Capability.VIEW)
def dlq_depth(request: HttpRequest, dlq_id: int) -> HttpResponse:
    """Broker-side depth of one DLQ, loaded lazily (HTMX) so a slow broker never blocks the page."""
    dlq = get_object_or_404(DeadLetterQueue.objects.select_related("broker"), pk=dlq_id)
    try:
        with broker_session(dlq.broker, timeout=settings.RECOVERY_HEALTH_TIMEOUT) as adapter:
            depth: int | None = adapter.depth(dlq.as_address())
        error = ""
    except RecoveryError as exc:
        depth, error = None, str(exc)
    return render(request, "console/partials/dlq_depth.html", {"depth": depth, "error": error})


@require_POST
@capability_required(Capability.CAPTURE)
def capture_now(request: HttpRequest, dlq_id: int) -> HttpResponse:
    dlq = get_object_or_404(DeadLetterQueue, pk=dlq_id)
    try:
        capture_pass_request(actor=request.user, dlq=dlq)
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Capture of {dlq.name} queued.")
    return redirect("dlq-detail", dlq_id=dlq.pk)


@capability_required(Capability.VIEW)
def letter_detail(request: HttpRequest, letter_id: int) -> HttpResponse:
    """One letter in full, masked for this user (issue 5 parts 4 and 6; invariant 10)."""
    letter = get_object_or_404(letter_for_detail(), pk=letter_id)
    masker = masker_for(letter.dlq, request.user)
    group, runbooks = letter_group_and_runbooks(letter)
    shown = mask_letter(letter, masker)
    return render(
        request,
        "console/letter.html",
        {
            "letter": shown,
            # from the masked copy: a key carried in a masked header stays masked (invariant 11)
            "idempotency_key": idempotency_key(shown),
            "returns": letter.returns.order_by("id").only("id", "captured_at")[:20],
            "body": body_display(letter, masker),
            "masked": masker.active,
            "group": group,
            "runbooks": runbooks,
            "timeline": letter_timeline(letter),
            "expired": letter.expires_at is not None and letter.expires_at <= timezone.now(),
        },
    )


@capability_required(Capability.VIEW)
def letter_body(request: HttpRequest, letter_id: int) -> HttpResponse:
    """The whole body as an attachment, masked unless the user holds the unmask grant; never
    rendered by the browser."""
    letter = get_object_or_404(DeadLetter.objects.select_related("dlq"), pk=letter_id)
    try:
        download = letter_body_download(actor=request.user, letter=letter)
    except RecoveryError as exc:  # a parked body object storage cannot give back (intact)
        messages.error(request, str(exc))
        return redirect("letter-detail", letter_id=letter.pk)
    response = HttpResponse(download.data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    return response
