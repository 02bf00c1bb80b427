"""Drill screens (issue 7): the list, the definition form (create and edit), the drill page
(approval, Run now, history with its trend chart) and a run's page (each step with its timing,
the expectations, the failing step named; live while the run is active). Every mutation is a POST
through recovery.drills.services, which checks capabilities and four eyes itself; the views
only hide controls a user could not use."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from console.drill_forms import DrillForm
from console.views.actions import object_action
from recovery.audit.selectors import audit_timeline
from recovery.drills import services, validation
from recovery.drills.screens import ROW_HEIGHT, drill_approve_blocker, drill_rows, drill_run_steps, drill_trend_charts
from recovery.drills.selectors import drill_active_run, drill_approval_problem, drill_history, drill_trend
from recovery.errors import RecoveryError
from recovery.models import Drill, DrillRun
from recovery.permissions import Capability, capability_required, user_can


@capability_required(Capability.VIEW)
def drills(request: HttpRequest) -> HttpResponse:
    return render(
        request, "console/drills.html", {"drills": drill_rows(), "can_plan": user_can(request.user, Capability.PLAN)}
    )


def _form_page(request: HttpRequest, form: DrillForm, drill: Drill | None) -> HttpResponse:
    events = audit_timeline(object_type="recovery.drill", object_id=str(drill.pk)) if drill else []
    status = 400 if form.errors else 200
    return render(request, "console/drill_form.html", {"form": form, "drill": drill, "events": events}, status=status)


@capability_required(Capability.PLAN)
def drill_new(request: HttpRequest) -> HttpResponse:
    defaults = {name: value for name, value in validation.DEFAULTS.items() if value is not None}
    form = DrillForm(request.POST or None, initial=defaults, can_choose_queue=user_can(request.user, Capability.MANAGE))
    if request.method == "POST" and form.is_valid():
        try:
            drill = services.drill_create(actor=request.user, data=form.service_data())
        except RecoveryError as exc:
            form.refuse(exc)
        else:
            messages.success(request, f"Drill {drill.name} defined: an approver other than you must approve it.")
            return redirect("drill-detail", drill_id=drill.pk)
    return _form_page(request, form, None)


@capability_required(Capability.PLAN)
def drill_edit(request: HttpRequest, drill_id: int) -> HttpResponse:
    drill = get_object_or_404(Drill.objects.select_related("broker"), pk=drill_id)
    admin = user_can(request.user, Capability.MANAGE)
    form = DrillForm(request.POST or None, initial=validation.current_values(drill), can_choose_queue=admin)
    if request.method == "POST" and form.is_valid():
        try:
            services.drill_update(actor=request.user, drill=drill, changes=form.service_data())
        except RecoveryError as exc:
            form.refuse(exc)
        else:
            messages.success(request, f"Drill {drill.name} saved.")
            return redirect("drill-detail", drill_id=drill.pk)
    return _form_page(request, form, drill)


def _drill_context(request: HttpRequest, drill: Drill) -> dict[str, Any]:
    approval, problem = drill_approval_problem(drill)
    active = drill_active_run(drill)
    trend = drill_trend(drill)
    approver = user_can(request.user, Capability.APPROVE)
    blocker = drill_approve_blocker(drill, request.user) if approver else ""
    return {
        "drill": drill,
        "approval": approval,
        "approval_problem": problem,
        "approvals": drill.approvals.select_related("approver").order_by("-created_at")[:20],
        "approve_blocker": blocker,
        "can_approve": approver and not blocker,
        "can_run": user_can(request.user, Capability.RUN),
        "can_edit": user_can(request.user, Capability.PLAN),
        "active_run": active,
        "history": drill_history(drill),
        "trend": trend,
        "chart": drill_trend_charts(trend, target_seconds=drill.max_recover_seconds),
        "events": audit_timeline(object_type="recovery.drill", object_id=str(drill.pk), limit=30),
    }


@capability_required(Capability.VIEW)
def drill_detail(request: HttpRequest, drill_id: int) -> HttpResponse:
    drill = get_object_or_404(
        Drill.objects.select_related("broker", "author", "non_drill_queue_admin", "dlq"), pk=drill_id
    )
    return render(request, "console/drill.html", _drill_context(request, drill))


_drill_action = partial(object_action, Drill, "drill_id", "drill-detail", (DrillRun, "drill-run-detail", "run_id"))


drill_approve = _drill_action(
    lambda r, d: services.drill_approve(actor=r.user, drill=d, comment=r.POST.get("comment", "")),
    "Drill approved: it runs on its schedule and by Run now until it changes.",
)
drill_run_now = _drill_action(lambda r, d: services.drill_run_now(actor=r.user, drill=d), "Drill run started.")


@capability_required(Capability.VIEW)
def drill_run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """One run; while it is active its live part polls this view (HTMX) for the partial."""
    run = get_object_or_404(
        DrillRun.objects.select_related("drill__broker", "requested_by", "plan", "replay_run"), pk=run_id
    )
    steps = drill_run_steps(run)
    elapsed = ((run.finished_at or timezone.now()) - run.started_at).total_seconds() if run.started_at else None
    context = {
        "run": run, "drill": run.drill, "steps": steps, "chart_height": len(steps) * ROW_HEIGHT,
        "active": run.active, "elapsed": elapsed,
    }  # fmt: skip
    template = "console/partials/drill_run_live.html" if request.htmx else "console/drill_run.html"
    return render(request, template, context)
