"""Classification rules: everyone may read the ordered list and the re-classification progress;
only admins (Capability.MANAGE) edit, reorder, preview and re-classify, always by POST."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from console.rule_forms import OP_LABELS, Row, RuleForm, conditions_from_post, editor_choices, rows_from_conditions
from recovery.audit.selectors import audit_timeline
from recovery.classification.rules import FIELD_LABELS
from recovery.classification.selectors import latest_reclassify_job, rule_list, rule_order_moved, rule_preview
from recovery.classification.services import (
    default_rules_install,
    reclassify_request,
    rule_create,
    rule_delete,
    rule_update,
    rules_reorder,
)
from recovery.errors import RecoveryError
from recovery.models import ClassificationRule, DeadLetterQueue
from recovery.permissions import Capability, capability_required, user_can


def _describe(condition: dict[str, Any], dlq_names: dict[int, str]) -> str:
    field, op, value = condition["field"], condition["op"], condition.get("value")
    subject = FIELD_LABELS[field]
    if field == "header":
        subject = f"header {condition['name']}"
    elif field == "body_json":
        subject = f"body {condition['path']}"
    elif field == "dlq":
        value = ", ".join(dlq_names.get(pk, f"#{pk}") for pk in value)
    elif field == "age" and condition.get("since") == "first_failed_at":
        subject = "age since first failure"
    text = f"{subject} {OP_LABELS[op]}"
    return text if value is None or op == "exists" else f"{text} {value}"


@capability_required(Capability.VIEW)
def rules_page(request: HttpRequest) -> HttpResponse:
    dlq_names = dict(DeadLetterQueue.objects.values_list("pk", "name"))
    rules = [(rule, [_describe(c, dlq_names) for c in rule.conditions]) for rule in rule_list()]
    return render(
        request,
        "console/rules.html",
        {"rules": rules, "job": latest_reclassify_job(), "can_manage": user_can(request.user, Capability.MANAGE)},
    )


@capability_required(Capability.VIEW)
def reclassify_progress(request: HttpRequest) -> HttpResponse:
    return render(request, "console/partials/reclassify_progress.html", {"job": latest_reclassify_job()})


@capability_required(Capability.MANAGE)
def rule_edit(request: HttpRequest, rule_id: int | None = None) -> HttpResponse:
    rule = get_object_or_404(ClassificationRule, pk=rule_id) if rule_id else None
    form = RuleForm(request.POST or None, instance=rule)
    if request.method == "POST" and form.is_valid():
        try:
            if rule is None:
                saved = rule_create(actor=request.user, data=form.service_data())
            else:
                saved = rule_update(actor=request.user, rule=rule, data=form.service_data())
        except RecoveryError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Rule {saved.name} saved; letters are re-classified in the background.")
            return redirect("rules")
    if request.method == "POST":
        rows = rows_from_conditions(form.conditions) if form.conditions else _posted_rows(request)
    else:
        rows = rows_from_conditions(rule.conditions if rule else [])
    events = audit_timeline(object_type="recovery.classificationrule", object_id=str(rule.pk)) if rule else []
    return render(
        request,
        "console/rule_form.html",
        {"form": form, "rule": rule, "rows": rows, "events": events, **editor_choices()},
    )


def _posted_rows(request: HttpRequest) -> list[Row]:
    """The rows as posted, so a refused form comes back as the admin typed it."""
    columns = [request.POST.getlist(k) for k in ("cond_field", "cond_op", "cond_name", "cond_value")]
    return [Row(*values) for values in zip(*columns, strict=False)] or rows_from_conditions([])


@require_GET
@capability_required(Capability.MANAGE)
def condition_row(request: HttpRequest) -> HttpResponse:
    """One more blank row for the condition editor (HTMX)."""
    return render(request, "console/partials/rule_condition_row.html", {"row": Row(), **editor_choices()})


@require_POST
@capability_required(Capability.MANAGE)
def rule_preview_partial(request: HttpRequest) -> HttpResponse:
    """How many of the latest letters the unsaved conditions match, and a sample (HTMX)."""
    rule = ClassificationRule.objects.filter(pk=request.POST.get("rule_id") or 0).first()
    try:
        preview, error = rule_preview(conditions=conditions_from_post(request.POST), rule=rule), ""
    except RecoveryError as exc:
        preview, error = None, str(exc)
    return render(request, "console/partials/rule_preview.html", {"preview": preview, "error": error})


@require_POST
@capability_required(Capability.MANAGE)
def rule_move(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(ClassificationRule, pk=rule_id)
    offset = -1 if request.POST.get("direction") == "up" else 1
    try:
        rules_reorder(actor=request.user, rule_ids=rule_order_moved(rule=rule, offset=offset))
    except RecoveryError as exc:
        messages.error(request, str(exc))
    return redirect("rules")


@require_POST
@capability_required(Capability.MANAGE)
def rule_toggle(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(ClassificationRule, pk=rule_id)
    try:
        rule = rule_update(actor=request.user, rule=rule, data={"enabled": not rule.enabled})
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rule {rule.name} {'enabled' if rule.enabled else 'disabled'}.")
    return redirect("rules")


@require_POST
@capability_required(Capability.MANAGE)
def rule_remove(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(ClassificationRule, pk=rule_id)
    try:
        rule_delete(actor=request.user, rule=rule)
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rule {rule.name} deleted; its letters are re-classified in the background.")
    return redirect("rules")


@require_POST
@capability_required(Capability.MANAGE)
def rules_install_defaults(request: HttpRequest) -> HttpResponse:
    try:
        installed = default_rules_install(actor=request.user)
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{len(installed)} default rule(s) installed." if installed else "All default rules are there."
        )
    return redirect("rules")


@require_POST
@capability_required(Capability.MANAGE)
def rules_reclassify(request: HttpRequest) -> HttpResponse:
    try:
        job = reclassify_request(actor=request.user)
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Re-classification #{job.pk} queued.")
    return redirect("rules")
