"""Request context for the audit trail and the logs: request id, client address, user agent and
trace id, held in a contextvar for the length of the request; the request id and, once
authentication has run, the user name are in every log line of the request
(recovery.observability.logging)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from recovery.audit.canonical import clean_text
from recovery.audit.context import RequestContext, current_request
from recovery.observability import logging as log_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        traceparent = _TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
        context = RequestContext(
            request_id=request_id,
            client_ip=client_ip(request),
            user_agent=clean_text(request.headers.get("User-Agent", ""), 300),
            trace_id=traceparent.group(1) if traceparent else "",
        )
        token = current_request.set(context)
        log_token = log_context.bind(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            log_context.unbind(log_token)
            current_request.reset(token)
        response["X-Request-ID"] = request_id
        return response

    def process_view(self, request: HttpRequest, *args: object) -> None:
        """The user, for the logs: views run after authentication, this middleware's call before it.
        The binding ends with the request (``unbind`` above restores what was there before it)."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            log_context.bind(user=user.get_username())


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the left-most X-Forwarded-For address when TRUST_X_FORWARDED_FOR is on
    (only behind a proxy that sets it; otherwise clients could forge their address)."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded:
            return clean_text(forwarded, 45)
    return clean_text(request.META.get("REMOTE_ADDR", ""), 45)
