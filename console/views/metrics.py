"""/metrics for Prometheus. Open to a scraper holding RECOVERY_METRICS_TOKEN (``Authorization:
Bearer <token>``) or to a logged-in admin; anyone else gets 401 (no or a wrong token) or 403 (a
logged-in user without the admin role), never the content."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from recovery.observability.scrape import render
from recovery.permissions import Role, user_roles


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _token_ok(token: str) -> bool:
    expected = settings.RECOVERY_METRICS_TOKEN
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def _unauthorized() -> HttpResponse:
    response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@login_not_required  # a scraper has no session: the token is checked here instead
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = _bearer(request)
    if token is not None:
        if not _token_ok(token):
            return _unauthorized()
    elif not request.user.is_authenticated:
        return _unauthorized()
    elif Role.ADMIN not in user_roles(request.user):
        return HttpResponse("the admin role is required\n", status=403, content_type="text/plain")
    body, content_type = render()
    return HttpResponse(body, content_type=content_type)
