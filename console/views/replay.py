"""Replay screens: the plan page (builder with its dry run, preconditions with live results,
approvals, history, controls) and the run page (live progress, achieved vs planned rate,
counters, stop-condition gauges, event log, pause/resume/abort). Every mutation is a POST that
goes through recovery.replay.services, which checks capabilities and four eyes itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Count, F, Value, When
from django.db.models.functions import TruncSecond
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from console.views.actions import object_action
from recovery.audit.selectors import audit_timeline
from recovery.errors import NotPermitted, RecoveryError
from recovery.models import (
    HELD_ROWS,
    LEASED_ROWS,
    AttemptState,
    Broker,
    Category,
    Disposition,
    LedgerEntry,
    PlanItem,
    PlanItemState,
    PlanState,
    ReplayPlan,
    ReplayRun,
    RunState,
    TargetSource,
)
from recovery.permissions import Capability, capability_required, user_can
from recovery.replay import freeze, ordering, plan_items, readers, services
from recovery.replay import run_ledger as run_ledger_rows
from recovery.replay import selectors as replay_selectors
from recovery.replay.evidence import is_inconclusive
from recovery.triage import selectors as triage_selectors
from recovery.triage.filters import LetterFilter

JSON_FIELDS = ("preconditions", "stop_conditions", "verifications")
INT_FIELDS = (
    "rate_per_second", "batch_size", "workers", "canary_count", "canary_window_seconds", "ramp_interval_seconds",
    "required_approvals",
)  # fmt: skip
BREAKER_FIELDS = ("breaker_cooldown_seconds", "breaker_probe_size")  # optional in a posted form


def _plan_context(request: HttpRequest, plan: ReplayPlan, form: dict[str, Any] | None = None) -> dict[str, Any]:
    selection = LetterFilter.from_json(plan.selection)
    user = request.user
    valid = replay_selectors.valid_approvals(plan) if plan.content_hash else []
    editable = plan.state in (PlanState.DRAFT, PlanState.SUBMITTED, PlanState.APPROVED, PlanState.REJECTED)
    item_counts = dict(PlanItem.objects.filter(plan=plan).values_list("state").annotate(n=Count("id")))
    replayed_again = PlanItem.objects.filter(plan=plan, state="included", replay_again=True).count()
    exclusions = (
        PlanItem.objects.filter(plan=plan, state="excluded")
        .values_list("exclusion")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    frozen = plan.state != PlanState.DRAFT and bool(item_counts)
    item_filter = plan_items.ItemFilter.from_params(request.GET)
    page, rows = (
        plan_items.items_page(plan, item_filter, request.GET.get("items_page"), user=user) if frozen else (None, [])
    )
    return {
        "plan": plan,
        "selection": selection,
        "frozen": plan_items.frozen_breakdown(plan) if frozen else None,
        "item_filter": item_filter,
        "item_filter_query": urlencode(item_filter.as_params()),
        "items_page": page,
        "item_rows": rows,
        "item_states": PlanItemState.choices,
        "categories": Category.choices,
        "dispositions": Disposition.choices,
        "letters_url": f"{reverse('dead-letters')}?{urlencode(selection.as_params(), doseq=True)}",
        "dry_run": _dry_run(plan) if plan.state == PlanState.DRAFT else None,
        "item_counts": item_counts,
        "replayed_again": replayed_again,
        "exclusions": list(exclusions),
        "item_target_sources": [
            (TargetSource(source).label if source else "not recorded", n)
            for source, n in PlanItem.objects.filter(plan=plan, state="included")
            .values_list("target_source")
            .annotate(n=Count("id"))
            .order_by("-n")
        ],
        "approvals": plan.approvals.select_related("approver").order_by("created_at"),
        "valid_approvals": len(valid) if plan.content_hash else 0,
        "approved_by_me": any(a.approver_id == user.pk for a in valid),
        "overrides": plan.overrides.select_related("admin").filter(content_hash=plan.content_hash),
        "runs": plan.runs.order_by("-created_at"),
        "runbooks": triage_selectors.selection_runbooks(selection),
        "ordering": ordering.plan_guarantee(plan),
        "events": audit_timeline(object_type="recovery.replayplan", object_id=str(plan.pk)),
        "brokers": Broker.objects.order_by("name"),
        "configured": _configured(plan),
        "form": form or _form_values(plan),
        "can_edit": editable and user_can(user, Capability.PLAN),
        "can_approve": plan.state in (PlanState.SUBMITTED, PlanState.APPROVED)
        and user_can(user, Capability.APPROVE)
        and user.pk != plan.author_id,
        "can_start": plan.state == PlanState.APPROVED and user_can(user, Capability.RUN),
        "can_override": plan.state in (PlanState.SUBMITTED, PlanState.APPROVED) and user_can(user, Capability.MANAGE),
    }


def _configured(plan: ReplayPlan) -> list[tuple[str, list[str]]]:
    """The plan's own checks as short lines (``name: param=value, ...``), so an approver sees what
    will stop and verify the run without reading JSON."""
    rows = []
    for label, field, key in (
        ("Own preconditions", "preconditions", "check"),
        ("Stop conditions", "stop_conditions", "condition"),
        ("Verification", "verifications", "step"),
    ):
        entries = getattr(plan, field) or []
        lines = []
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            params = ", ".join(f"{k}={v}" for k, v in entry.items() if k != key)
            lines.append(f"{entry.get(key, '?')}" + (f": {params}" if params else ""))
        rows.append((label, lines))
    return rows


def _dry_run(plan: ReplayPlan) -> dict[str, Any]:
    """The dry run with plain lists: a template reading a Counter's ``items`` gets Counter["items"] == 0."""
    dry = freeze.dry_run(plan)
    return {
        "included": dry.included,
        "excluded": dry.excluded,
        **{
            name: getattr(dry, name).most_common()
            for name in ("by_category", "by_disposition", "exclusions", "targets")
        },
        "target_sources": [(target, source, n) for (target, source), n in dry.target_sources.most_common()],
    }


def _form_values(plan: ReplayPlan) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(plan, name) for name in ("name", "reason", *INT_FIELDS, *BREAKER_FIELDS)}
    values.update(
        target_broker=plan.target_broker_id or "",
        target_address=plan.target_address,
        target_routing_key=plan.target_routing_key,
        include_held=plan.include_held,
        replay_again=plan.replay_again,
        replay_again_reason=plan.replay_again_reason,
        ramp_steps=", ".join(str(s) for s in plan.ramp_steps or []),
        **{name: json.dumps(getattr(plan, name) or [], indent=1) for name in JSON_FIELDS},
    )
    return values


def _changes_from(post: Any) -> dict[str, Any]:
    """The edit form's fields as typed plan changes; raises RecoveryError naming a bad field."""
    changes: dict[str, Any] = {"name": post.get("name", ""), "reason": post.get("reason", "")}
    for name in INT_FIELDS:
        try:
            changes[name] = int(post.get(name, ""))
        except ValueError:
            raise RecoveryError(f"{name.replace('_', ' ')}: a whole number") from None
    for name in BREAKER_FIELDS:
        if post.get(name, "") != "":
            try:
                changes[name] = int(post[name])
            except ValueError:
                raise RecoveryError(f"{name.replace('_', ' ')}: a whole number") from None
    try:
        changes["ramp_steps"] = [int(s) for s in post.get("ramp_steps", "").replace(" ", "").split(",") if s]
    except ValueError:
        raise RecoveryError("ramp steps: whole percentages separated by commas, e.g. 10, 50, 100") from None
    for name in JSON_FIELDS:
        try:
            changes[name] = json.loads(post.get(name) or "[]")
        except json.JSONDecodeError as exc:
            raise RecoveryError(f"{name.replace('_', ' ')}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    broker_id = post.get("target_broker", "")
    changes["target_broker"] = Broker.objects.filter(pk=broker_id).first() if broker_id.isdigit() else None
    if broker_id and changes["target_broker"] is None:
        raise RecoveryError("target broker: unknown broker")
    changes["target_address"] = post.get("target_address", "").strip()
    changes["target_routing_key"] = post.get("target_routing_key", "").strip()
    changes["include_held"] = post.get("include_held") == "on"
    changes["replay_again"] = post.get("replay_again") == "on"
    changes["replay_again_reason"] = post.get("replay_again_reason", "").strip()
    return changes


@capability_required(Capability.VIEW)
def plan_detail(request: HttpRequest, plan_id: int) -> HttpResponse:
    plan = get_object_or_404(ReplayPlan.objects.select_related("author", "target_broker"), pk=plan_id)
    return render(request, "console/plan.html", _plan_context(request, plan))


@capability_required(Capability.VIEW)
def plan_readers(request: HttpRequest, plan_id: int) -> HttpResponse:
    """Who else reads records replayed to the plan's Kafka targets (HTMX): asked of the cluster now."""
    plan = get_object_or_404(ReplayPlan, pk=plan_id)
    if plan.state != PlanState.DRAFT:
        kafka_targets = readers.frozen_kafka_targets(plan)
    elif readers.may_target_kafka(plan):  # the dry run is the page's costliest query: only when it can matter
        kafka_targets = freeze.dry_run(plan).kafka_targets
    else:
        kafka_targets = {}
    return render(request, "console/partials/plan_readers.html", {"readers": readers.kafka_readers(kafka_targets)})


@capability_required(Capability.VIEW)
def plan_preconditions(request: HttpRequest, plan_id: int) -> HttpResponse:
    """Live precondition results (HTMX): evaluated now, against the real targets."""
    from recovery.replay.preconditions import evaluate_preconditions

    plan = get_object_or_404(ReplayPlan, pk=plan_id)
    stage = "approve" if plan.state == PlanState.SUBMITTED else "run" if plan.state == PlanState.RUNNING else "start"
    results = evaluate_preconditions(plan, stage=stage) if PlanItem.objects.filter(plan=plan).exists() else []
    overridden = set(plan.overrides.filter(content_hash=plan.content_hash).values_list("check_name", flat=True))
    return render(
        request,
        "console/partials/plan_preconditions.html",
        {
            "results": results,
            "overridden": overridden,
            "blocking": [r.name for r in results if not r.ok and r.name not in overridden],
            "checked_at": timezone.now(),
            "plan": plan,
            "can_override": user_can(request.user, Capability.MANAGE),
        },
    )


@require_POST
@capability_required(Capability.PLAN)
def plan_edit(request: HttpRequest, plan_id: int) -> HttpResponse:
    plan = get_object_or_404(ReplayPlan.objects.select_related("author"), pk=plan_id)
    try:
        services.plan_update(actor=request.user, plan=plan, changes=_changes_from(request.POST))
    except RecoveryError as exc:
        messages.error(request, str(exc))
        context = _plan_context(request, plan, form={**_form_values(plan), **request.POST.dict()})
        return render(request, "console/plan.html", context, status=400)
    messages.success(request, "Plan saved.")
    return redirect("plan-detail", plan_id=plan.pk)


_plan_action = partial(object_action, ReplayPlan, "plan_id", "plan-detail", (ReplayRun, "run-detail", "run_id"))


plan_submit = _plan_action(lambda r, p: services.plan_submit(actor=r.user, plan=p), "Plan submitted for approval.")
plan_approve = _plan_action(
    lambda r, p: services.plan_approve(actor=r.user, plan=p, comment=r.POST.get("comment", "")), "Plan approved."
)
plan_reject = _plan_action(
    lambda r, p: services.plan_reject(actor=r.user, plan=p, comment=r.POST.get("comment", "")), "Plan rejected."
)
plan_cancel = _plan_action(
    lambda r, p: services.plan_cancel(actor=r.user, plan=p, reason=r.POST.get("reason", "")), "Plan cancelled."
)
plan_override = _plan_action(
    lambda r, p: services.precondition_override(
        actor=r.user, plan=p, check=r.POST.get("check", ""), reason=r.POST.get("reason", "")
    ),
    "Precondition overridden.",
)
run_start = _plan_action(lambda r, p: services.run_start(actor=r.user, plan=p), "Run started.")


# -- runs --------------------------------------------------------------------------------------


def _run_context(request: HttpRequest, run: ReplayRun) -> dict[str, Any]:
    from recovery.replay.stop_conditions import evaluate_stop_conditions

    leased = Case(  # both stored as pending
        When(HELD_ROWS, then=Value(AttemptState.HELD)),
        When(LEASED_ROWS, then=Value(AttemptState.LEASED)),
        default=F("state"),
    )
    counts = dict(
        LedgerEntry.objects.filter(run=run).annotate(shown=leased).values_list("shown").annotate(n=Count("id"))
    )
    done = sum(counts.get(state, 0) for state in ("published", "failed", "verified", "redeadlettered", "skipped"))
    since = timezone.now() - timedelta(seconds=60)
    per_second = dict(
        LedgerEntry.objects.filter(run=run, published_at__gte=since)
        .annotate(second=TruncSecond("published_at"))
        .values_list("second")
        .annotate(n=Count("id"))
    )
    start = timezone.now().replace(microsecond=0) - timedelta(seconds=59)
    achieved = [per_second.get(start + timedelta(seconds=i), 0) for i in range(60)]
    active = run.state in (RunState.PENDING, RunState.RUNNING, RunState.PAUSED, RunState.VERIFYING)
    left = max(run.total - done, 0)
    elapsed = ((run.finished_at or timezone.now()) - run.started_at).total_seconds() if run.started_at else None
    return {
        "run": run,
        "plan": run.plan,
        "counts": counts,
        "percent": int(done * 100 / run.total) if run.total else 100,
        "phase": _phase_label(run) if active else "",
        "elapsed": _duration(elapsed) if elapsed is not None else "",
        "eta_seconds": round(left / run.plan.rate_per_second) if run.state == RunState.RUNNING and left else None,
        "recent_rate": _recent_rate(run, elapsed or 0),
        "breaker": run.breaker if run.plan.breaker_cooldown_seconds or run.breaker else None,
        "evidence": [
            {
                **step,
                "details_json": json.dumps(step.get("details") or {}, indent=1, sort_keys=True, default=str),
                "inconclusive": is_inconclusive(step),
            }
            for step in (run.verification if isinstance(run.verification, list) else [])
            # progress stored while verifying (engine._show_progress) means nothing once it stopped
            if isinstance(step, dict) and (not step.get("pending") or run.state == RunState.VERIFYING)
        ],
        "achieved": achieved,
        "chart": triage_selectors.chart_points([*achieved, run.plan.rate_per_second], width=600, height=100),
        "planned_y": 100 - 100 * run.plan.rate_per_second / max(max(achieved), run.plan.rate_per_second, 1),
        "gauges": evaluate_stop_conditions(run) if run.state == RunState.RUNNING else [],
        "events": run.events.order_by("-at", "-id")[:50],
        "blocked": ordering.blocked_groups(run) if active else [],
        "active": active,
        "can_run": user_can(request.user, Capability.RUN),
    }


def _recent_rate(run: ReplayRun, elapsed: float, window: float = 5.0) -> float:
    """Messages per second confirmed over the last ``window`` seconds (or since the start)."""
    window = min(window, max(elapsed, 1.0))
    since = timezone.now() - timedelta(seconds=window)
    return LedgerEntry.objects.filter(run=run, published_at__gte=since).count() / window


def _duration(seconds: float) -> str:
    minutes, secs = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{n} {unit}" for n, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if n) or "0 s"


def _phase_label(run: ReplayRun) -> str:
    """The engine's phase (canary, canary-window, ramp-N, full, verify) in words."""
    plan, phase = run.plan, run.phase or ""
    steps = plan.ramp_steps or []
    if phase == "canary":
        return f"canary: the first {plan.canary_count:,} letters"
    if phase == "canary-window":
        return f"canary out; watching it for {plan.canary_window_seconds} s before going on"
    if phase.startswith("ramp-") and phase[5:].isdigit() and int(phase[5:]) < len(steps):
        index = int(phase[5:])
        return f"ramp step {index + 1} of {len(steps)}: {steps[index]}% of the planned rate"
    if phase.startswith("ramp-") or phase == "full":
        return "full rate"
    if phase == "verify":
        return "every letter sent; running the verification steps"
    return phase


@capability_required(Capability.VIEW)
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(ReplayRun.objects.select_related("plan", "started_by"), pk=run_id)
    template = "console/partials/run_live.html" if request.htmx else "console/run.html"
    return render(request, template, _run_context(request, run))


def _run_action(call: Callable[..., ReplayRun], success: str) -> Callable[..., HttpResponse]:
    @require_POST
    @capability_required(Capability.VIEW)  # the service checks the run capability
    def view(request: HttpRequest, run_id: int) -> HttpResponse:
        run = get_object_or_404(ReplayRun, pk=run_id)
        try:
            call(actor=request.user, run=run, reason=request.POST.get("reason", ""))
        except NotPermitted as exc:
            raise PermissionDenied(str(exc)) from None
        except RecoveryError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, success)
        return redirect("run-detail", run_id=run.pk)

    return view


run_pause = _run_action(services.run_pause, "Run paused.")
run_resume = _run_action(services.run_resume, "Run resumed.")
run_abort = _run_action(services.run_abort, "Run aborted.")


@require_POST
@capability_required(Capability.VIEW)  # the service checks the run capability
def run_release(request: HttpRequest, run_id: int) -> HttpResponse:
    """Release a blocked ordered group (or every one, without ``group``): audited, with a reason."""
    run = get_object_or_404(ReplayRun, pk=run_id)
    try:
        released = services.run_release_blocked(
            actor=request.user, run=run, group=request.POST.get("group", ""), reason=request.POST.get("reason", "")
        )
    except NotPermitted as exc:
        raise PermissionDenied(str(exc)) from None
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        then = " Resume the run to send them." if run.state == RunState.PAUSED else ""
        messages.success(request, f"{released} group(s) released.{then}")
    return redirect("run-detail", run_id=run.pk)


@capability_required(Capability.VIEW)
def runs(request: HttpRequest) -> HttpResponse:
    return render(request, "console/runs.html", {"runs": ReplayRun.objects.select_related("plan", "started_by")[:200]})


@capability_required(Capability.VIEW)
def run_ledger(request: HttpRequest, run_id: int) -> HttpResponse:
    """What the run did, letter by letter: outcome filter, 100 rows a page, CSV/JSONL export."""
    run = get_object_or_404(ReplayRun.objects.select_related("plan"), pk=run_id)
    outcome = request.GET.get("outcome", "")
    outcome = outcome if outcome in run_ledger_rows.OUTCOMES else ""
    page, rows = run_ledger_rows.ledger_page(run, outcome, request.GET.get("page"), user=request.user)
    return render(
        request,
        "console/run_ledger.html",
        {"run": run, "outcome": outcome, "outcomes": run_ledger_rows.OUTCOMES, "page": page, "rows": rows},
    )


@require_POST
@capability_required(Capability.VIEW)
def run_ledger_export(request: HttpRequest, run_id: int) -> HttpResponse:
    """Stream the filtered ledger (POST: the export writes an audit event first)."""
    run = get_object_or_404(ReplayRun, pk=run_id)
    fmt = request.POST.get("format", "csv")
    outcome = request.POST.get("outcome", "")
    try:
        lines = run_ledger_rows.ledger_export(actor=request.user, run=run, outcome=outcome, fmt=fmt)
    except RecoveryError as exc:
        messages.error(request, str(exc))
        return redirect("run-ledger", run_id=run.pk)
    response = StreamingHttpResponse(lines, content_type=run_ledger_rows.EXPORT_FORMATS[fmt])
    suffix = f"-{outcome}" if outcome in run_ledger_rows.OUTCOMES else ""
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-ledger{suffix}.{fmt}"'
    return response
