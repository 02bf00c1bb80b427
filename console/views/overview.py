from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from recovery.brokers.selectors import broker_list
from recovery.permissions import Capability, capability_required


@capability_required(Capability.VIEW)
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "console/overview.html", {"brokers": broker_list()})
