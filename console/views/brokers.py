"""Broker and DLQ administration (admins): forms with validation, test connection, discover."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.forms import BrokerForm, DlqForm
from recovery.audit.selectors import audit_timeline
from recovery.brokers.selectors import broker_candidates, broker_connection_check
from recovery.brokers.services import broker_save, dlq_save
from recovery.errors import RecoveryError
from recovery.models import Broker, DeadLetterQueue
from recovery.permissions import Capability, capability_required


@capability_required(Capability.MANAGE)
def broker_edit(request: HttpRequest, broker_id: int | None = None) -> HttpResponse:
    broker = get_object_or_404(Broker, pk=broker_id) if broker_id else None
    form = BrokerForm(request.POST or None, instance=broker)
    if request.method == "POST" and form.is_valid():
        try:
            saved = broker_save(actor=request.user, broker=broker, data=form.cleaned_data)
        except RecoveryError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Broker {saved.name} saved.")
            return redirect("broker-edit", broker_id=saved.pk)
    events = audit_timeline(object_type="recovery.broker", object_id=str(broker.pk)) if broker else []
    return render(request, "console/broker_form.html", {"form": form, "broker": broker, "events": events})


@require_POST
@capability_required(Capability.MANAGE)
def broker_test(request: HttpRequest, broker_id: int) -> HttpResponse:
    broker = get_object_or_404(Broker, pk=broker_id)
    result = broker_connection_check(broker)
    (messages.success if result.ok else messages.error)(request, f"{broker.name}: {result.message}")
    return redirect("broker-edit", broker_id=broker.pk)


@capability_required(Capability.MANAGE)
def broker_discover(request: HttpRequest, broker_id: int) -> HttpResponse:
    broker = get_object_or_404(Broker, pk=broker_id)
    try:
        candidates, error = broker_candidates(broker), ""
    except RecoveryError as exc:
        candidates, error = [], str(exc)
    known = set(DeadLetterQueue.objects.filter(broker=broker).values_list("address", flat=True))
    return render(
        request,
        "console/broker_discover.html",
        {"broker": broker, "candidates": candidates, "error": error, "known": known},
    )


@capability_required(Capability.MANAGE)
def dlq_edit(request: HttpRequest, dlq_id: int | None = None) -> HttpResponse:
    dlq = get_object_or_404(DeadLetterQueue, pk=dlq_id) if dlq_id else None
    initial = {k: request.GET[k] for k in ("broker", "address", "name", "vhost") if k in request.GET}
    if "sources" in request.GET:
        initial["sources"] = request.GET.getlist("sources")
    form = DlqForm(request.POST or None, instance=dlq, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            saved = dlq_save(actor=request.user, dlq=dlq, data=form.cleaned_data)
        except RecoveryError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Dead-letter queue {saved.name} saved.")
            return redirect("dlq-detail", dlq_id=saved.pk)
    return render(request, "console/dlq_form.html", {"form": form, "dlq": dlq})
