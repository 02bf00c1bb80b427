"""Triage screens: the letters list with filters and bulk actions, fingerprint groups, runbooks,
and replay plan drafts created from a selection. Views stay thin: parsing, one service or
selector call, a template. Object access and capabilities are checked server-side."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from recovery.audit.selectors import audit_timeline
from recovery.errors import RecoveryError
from recovery.models import (
    Category,
    DeadLetterQueue,
    DeadLetterState,
    Disposition,
    FingerprintGroup,
    ReplayPlan,
    Runbook,
    TriageAction,
    TriageActionKind,
)
from recovery.permissions import Capability, capability_required, user_can
from recovery.triage import selectors
from recovery.triage.filters import DEFAULT_WORK, SORTS, WORK, LetterFilter
from recovery.triage.services import group_runbook_set, letters_triage, plan_draft_create, runbook_save


def _filter_or_error(request: HttpRequest, params) -> tuple[LetterFilter, str]:
    """Lists show open work unless the query names another ``work`` (issue 15: an emptied
    inbox means the work is done)."""
    if "work" not in params:
        params = params.copy()
        params["work"] = DEFAULT_WORK
    try:
        return LetterFilter.from_params(params), ""
    except RecoveryError as exc:
        return LetterFilter(work=DEFAULT_WORK), str(exc)


@capability_required(Capability.VIEW)
def dead_letters(request: HttpRequest) -> HttpResponse:
    """The letters list: filters, keyset pages, an estimated total loaded lazily."""
    letter_filter, error = _filter_or_error(request, request.GET)
    sort = request.GET.get("sort") or "newest"
    page = None
    if not error:
        try:
            page = selectors.letters_page(letter_filter, sort=sort, cursor=request.GET.get("cursor", ""))
        except RecoveryError as exc:
            error = str(exc)
    query = urlencode(letter_filter.as_params(), doseq=True)
    context = {
        "filter": letter_filter,
        "filter_error": error,
        "filter_query": query,
        "filter_params": letter_filter.as_params(),
        "page": page,
        "sort": sort if sort in SORTS else "newest",
        "sorts": [(key, label) for key, (_c, _d, label) in SORTS.items()],
        "dlqs": DeadLetterQueue.objects.order_by("name").only("id", "name"),
        "categories": Category.choices,
        "dispositions": Disposition.choices,
        "states": DeadLetterState.choices,
        "works": [(key, label) for key, (label, _states) in WORK.items()],
        "actions": TriageActionKind.choices,
        "can_classify": user_can(request.user, Capability.CLASSIFY),
        "can_plan": user_can(request.user, Capability.PLAN),
        "next_url": _page_url(letter_filter, sort, page.next_cursor) if page and page.next_cursor else "",
    }
    template = (
        "console/partials/letters_results.html"
        if request.htmx and request.GET.get("cursor")
        else "console/letters.html"
    )
    return render(request, template, context)


def _page_url(letter_filter: LetterFilter, sort: str, cursor: str) -> str:
    return f"{reverse('dead-letters')}?{urlencode([*letter_filter.as_params(), ('sort', sort), ('cursor', cursor)])}"


@capability_required(Capability.VIEW)
def letters_total(request: HttpRequest) -> HttpResponse:
    letter_filter, error = _filter_or_error(request, request.GET)
    total = None if error else selectors.estimated_total(letter_filter)
    return render(request, "console/partials/letters_total.html", {"total": total})


def _selection(request: HttpRequest) -> LetterFilter:
    """Picked letters (checkboxes named ``id``) or the whole filter result (``scope=filter``)."""
    if request.POST.get("scope") == "filter":
        params = request.POST.copy()
        params.setlist("id", [])
        return LetterFilter.from_params(params)
    ids = request.POST.getlist("id")
    if not ids:
        raise RecoveryError("pick at least one letter, or choose the whole filter result")
    return LetterFilter.from_params({"id": ids})


def _back(request: HttpRequest) -> str:
    back = request.POST.get("back", "")
    return back if back.startswith("/letters/") or back.startswith("/groups/") else reverse("dead-letters")


@require_POST
@capability_required(Capability.CLASSIFY)
def letters_bulk(request: HttpRequest) -> HttpResponse:
    try:
        action = letters_triage(
            actor=request.user,
            selection=_selection(request),
            kind=request.POST.get("action", ""),
            value=request.POST.get("value", ""),
            reason=request.POST.get("reason", ""),
        )
    except RecoveryError as exc:
        messages.error(request, str(exc))
        return redirect(_back(request))
    if action.job_id:
        messages.success(request, f"{action.get_kind_display()} started on the whole filter result.")
        return redirect("triage-job", job_id=action.job_id)
    messages.success(request, f"{action.get_kind_display()}: {action.letter_count} letter(s) changed.")
    return redirect(_back(request))


@capability_required(Capability.VIEW)
def triage_job(request: HttpRequest, job_id: int) -> HttpResponse:
    action = get_object_or_404(TriageAction.objects.select_related("job"), job_id=job_id)
    template = "console/partials/triage_job.html" if request.htmx else "console/triage_job.html"
    return render(request, template, {"action": action, "job": action.job})


@require_POST
@capability_required(Capability.PLAN)
def plan_from_selection(request: HttpRequest) -> HttpResponse:
    try:
        plan = plan_draft_create(
            actor=request.user,
            selection=_selection(request),
            name=request.POST.get("name", ""),
            reason=request.POST.get("reason", ""),
        )
    except RecoveryError as exc:
        messages.error(request, str(exc))
        return redirect(_back(request))
    messages.success(request, f"Replay plan {plan.name!r} drafted.")
    return redirect("plan-detail", plan_id=plan.pk)


@capability_required(Capability.VIEW)
def plans(request: HttpRequest) -> HttpResponse:
    return render(request, "console/plans.html", {"plans": ReplayPlan.objects.select_related("author")[:200]})


# -- groups ------------------------------------------------------------------------------------


@capability_required(Capability.VIEW)
def groups(request: HttpRequest) -> HttpResponse:
    """Failure groups with open letters by default (issue 15); ``work=all`` shows every group."""
    order = request.GET.get("order", "count")
    work = request.GET.get("work", "open")
    try:
        page = int(request.GET.get("page", "1"))
        rows = selectors.groups_page(order=order, offset=(max(page, 1) - 1) * 50, work=work)
    except (ValueError, RecoveryError) as exc:
        messages.error(request, f"bad page or order: {exc}")
        order, page, work, rows = "count", 1, "open", selectors.groups_page()
    for group in rows:
        group.chart = selectors.chart_points(group.trend, width=140, height=28)
    return render(request, "console/groups.html", {"groups": rows, "order": order, "page": max(page, 1), "work": work})


@capability_required(Capability.VIEW)
def group_detail(request: HttpRequest, fingerprint: str) -> HttpResponse:
    try:
        group = selectors.group_detail(fingerprint)
    except FingerprintGroup.DoesNotExist:
        raise Http404("no such fingerprint group") from None
    return render(
        request,
        "console/group.html",
        {
            "group": group,
            "chart": selectors.chart_points(group.trend, width=420, height=60),
            "letters_url": f"{reverse('dead-letters')}?{urlencode({'fingerprint': group.fingerprint})}",
            "runbooks": Runbook.objects.only("id", "title"),
            "can_classify": user_can(request.user, Capability.CLASSIFY),
            "events": audit_timeline(object_type="recovery.fingerprintgroup", object_id=str(group.pk)),
        },
    )


@require_POST
@capability_required(Capability.CLASSIFY)
def group_runbook(request: HttpRequest, fingerprint: str) -> HttpResponse:
    group = get_object_or_404(FingerprintGroup, fingerprint=fingerprint)
    runbook_id = request.POST.get("runbook", "")
    runbook = get_object_or_404(Runbook, pk=runbook_id) if runbook_id else None
    group_runbook_set(actor=request.user, group=group, runbook=runbook)
    messages.success(request, "Runbook attached." if runbook else "Runbook detached.")
    return redirect("group-detail", fingerprint=fingerprint)


# -- runbooks ----------------------------------------------------------------------------------


@capability_required(Capability.VIEW)
def runbooks(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "console/runbooks.html",
        {
            "runbooks": Runbook.objects.select_related("updated_by").prefetch_related("rules", "groups"),
            "can_classify": user_can(request.user, Capability.CLASSIFY),
        },
    )


def _links_from_text(text: str) -> list[dict[str, str]]:
    """One link per line: ``title | url`` or just ``url``."""
    links = []
    for line in text.splitlines():
        if not line.strip():
            continue
        title, _, url = line.rpartition("|")
        links.append({"title": title.strip(), "url": url.strip()})
    return links


@capability_required(Capability.VIEW)
def runbook_edit(request: HttpRequest, runbook_id: int | None = None) -> HttpResponse:
    runbook = get_object_or_404(Runbook, pk=runbook_id) if runbook_id else None
    can_edit = user_can(request.user, Capability.CLASSIFY)
    error = ""
    data = {
        "title": runbook.title if runbook else "",
        "owner": runbook.owner if runbook else "",
        "body": runbook.body if runbook else "",
        "links": "\n".join(f"{link['title']} | {link['url']}" for link in (runbook.links if runbook else [])),
    }
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied("requires the 'classify' capability")
        data = {key: request.POST.get(key, "") for key in data}
        try:
            saved = runbook_save(
                actor=request.user,
                runbook=runbook,
                title=data["title"],
                owner=data["owner"],
                body=data["body"],
                links=_links_from_text(data["links"]),
            )
        except RecoveryError as exc:
            error = str(exc)
        else:
            messages.success(request, f"Runbook {saved.title!r} saved.")
            return redirect("runbook-edit", runbook_id=saved.pk)
    return render(
        request,
        "console/runbook.html",
        {
            "runbook": runbook,
            "data": data,
            "error": error,
            "can_edit": can_edit,
            "events": audit_timeline(object_type="recovery.runbook", object_id=str(runbook.pk)) if runbook else [],
        },
    )
