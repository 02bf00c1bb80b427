from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from recovery.health.selectors import health_report
from recovery.permissions import Capability, capability_required


@capability_required(Capability.VIEW)
def health(request: HttpRequest) -> HttpResponse:
    return render(request, "console/health.html", {"checks": health_report()})


@capability_required(Capability.VIEW)
def health_rows(request: HttpRequest) -> HttpResponse:
    """The health table body alone, refreshed by HTMX on the health and overview pages."""
    compact = request.GET.get("compact") == "1"
    return render(request, "console/partials/health_rows.html", {"checks": health_report(), "compact": compact})
