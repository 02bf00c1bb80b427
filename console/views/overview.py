from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from recovery.brokers.selectors import broker_list
from recovery.drills.selectors import drills_failing
from recovery.permissions import Capability, capability_required, user_can
from recovery.replay.waiting import plans_awaiting_approval, plans_ready_to_start
from recovery.triage import selectors


@capability_required(Capability.VIEW)
def overview(request: HttpRequest) -> HttpResponse:
    """Per DLQ: broker-side depth (lazy), captured letters by category and state, the oldest,
    arrivals over 48 hours and what expires within 24 hours; drills whose latest run failed; plans
    waiting for this user's approval (approvers) and approved plans ready to start (operators)."""
    hours = selectors.arrivals(hours=48)
    return render(
        request,
        "console/overview.html",
        {
            "brokers": broker_list(),
            "summaries": selectors.dlq_summaries(),
            "arrivals": hours,
            "arrivals_chart": selectors.chart_points([n for _, n in hours], width=720, height=120),
            "arrivals_total": sum(n for _, n in hours),
            "expiring": selectors.expiring_letters(),
            "can_capture": user_can(request.user, Capability.CAPTURE),
            "failing_drills": drills_failing(),
            "awaiting_approval": plans_awaiting_approval(request.user),
            "ready_to_start": plans_ready_to_start(request.user),
        },
    )
