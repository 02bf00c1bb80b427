from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from recovery.audit.selectors import audit_timeline
from recovery.brokers.registry import broker_session
from recovery.capture.selectors import body_preview, dlq_list, recent_letters, recent_passes
from recovery.capture.services import capture_pass_request
from recovery.errors import RecoveryError
from recovery.models import DeadLetter, DeadLetterQueue
from recovery.permissions import Capability, capability_required, user_can


@capability_required(Capability.VIEW)
def dead_letters(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "console/dead_letters.html",
        {"dlqs": dlq_list(), "letters": recent_letters(), "can_capture": user_can(request.user, Capability.CAPTURE)},
    )


@capability_required(Capability.VIEW)
def dlq_detail(request: HttpRequest, dlq_id: int) -> HttpResponse:
    dlq = get_object_or_404(DeadLetterQueue.objects.select_related("broker"), pk=dlq_id)
    return render(
        request,
        "console/dlq.html",
        {
            "dlq": dlq,
            "passes": recent_passes(dlq=dlq),
            "letters": recent_letters(dlq=dlq),
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
    letter = get_object_or_404(DeadLetter.objects.select_related("dlq", "dlq__broker"), pk=letter_id)
    return render(
        request,
        "console/letter.html",
        {
            "letter": letter,
            "preview": body_preview(letter),
            "events": audit_timeline(object_type="recovery.deadletter", object_id=str(letter.pk)),
        },
    )


@capability_required(Capability.VIEW)
def letter_body(request: HttpRequest, letter_id: int) -> HttpResponse:
    """The whole body as an attachment: never rendered by the browser."""
    letter = get_object_or_404(DeadLetter, pk=letter_id)
    response = HttpResponse(bytes(letter.body or b""), content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="dead-letter-{letter.pk}.bin"'
    response["Content-Security-Policy"] = "sandbox"
    return response
