"""Reads for the triage screens, built to stay fast on millions of dead letters.

- Lists page by keyset (the sort column and the id of the last row shown), never OFFSET.
- Totals are exact up to EXACT_COUNT_LIMIT and estimated by the planner beyond (no COUNT(*)
  over millions of rows).
- Bodies and stack traces are deferred in lists.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from recovery.errors import InvalidInput
from recovery.models import (
    OPEN_STATES,
    CapturePass,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterState,
    FingerprintGroup,
    Runbook,
)
from recovery.triage.filters import DEFAULT_SORT, SORTS, LetterFilter

EXACT_COUNT_LIMIT = 10_000
PAGE_SIZE = 50
LIST_DEFERRED = ("body", "stack_trace", "headers", "properties", "failure_extras", "search_text")


@dataclass(frozen=True)
class Total:
    value: int
    exact: bool


@dataclass(frozen=True)
class LetterPage:
    letters: list[DeadLetter]
    next_cursor: str | None
    sort: str


def letters_page(
    letter_filter: LetterFilter, *, sort: str = DEFAULT_SORT, cursor: str = "", limit: int = PAGE_SIZE
) -> LetterPage:
    """One page of letters after ``cursor`` (an opaque token from the previous page)."""
    if sort not in SORTS:
        raise InvalidInput(f"sort: one of {', '.join(SORTS)}")
    column, descending, _label = SORTS[sort]
    letters = letter_filter.apply().select_related("dlq", "rule").defer(*LIST_DEFERRED)
    if cursor:
        value, last_id = _decode_cursor(cursor)
        letters = letters.filter(_after(column, descending, value, last_id))
    # NULLS LAST only where a column can be null: on captured_at (never null) it would keep the
    # (captured_at, id) indexes from giving the order, and a page would sort every match.
    nulls_last = {"nulls_last": True} if DeadLetter._meta.get_field(column).null else {}
    ordering = (
        (F(column).desc(**nulls_last), F("id").desc()) if descending else (F(column).asc(**nulls_last), F("id").asc())
    )
    rows = list(letters.order_by(*ordering)[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(getattr(rows[-1], column), rows[-1].pk) if more and rows else None
    return LetterPage(letters=rows, next_cursor=next_cursor, sort=sort)


def _after(column: str, descending: bool, value: datetime | None, last_id: int) -> Q:
    """Rows after (value, id) in ORDER BY column [DESC] NULLS LAST, id [DESC]."""
    id_after = Q(pk__lt=last_id) if descending else Q(pk__gt=last_id)
    if value is None:  # inside the trailing NULL block
        return Q(**{f"{column}__isnull": True}) & id_after
    beyond = Q(**{f"{column}__lt" if descending else f"{column}__gt": value})
    return beyond | (Q(**{column: value}) & id_after) | Q(**{f"{column}__isnull": True})


def _encode_cursor(value: datetime | None, last_id: int) -> str:
    raw = json.dumps([value.isoformat() if value else None, last_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime | None, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, last_id = json.loads(raw)
        when = parse_datetime(value) if value is not None else None
        if (value is not None and when is None) or not isinstance(last_id, int):
            raise ValueError
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidInput("the page cursor is not valid: start from the first page") from None
    return when, last_id


def estimated_total(letter_filter: LetterFilter) -> Total:
    """Exact below EXACT_COUNT_LIMIT (a bounded count), else the planner's estimate."""
    queryset = letter_filter.apply()
    bounded = queryset.order_by().values("pk")[: EXACT_COUNT_LIMIT + 1]
    sql, params = bounded.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({sql}) AS bounded", params)  # noqa: S608 - ORM-built SQL
        (count,) = cursor.fetchone()
        if count <= EXACT_COUNT_LIMIT:
            return Total(count, True)
        sql, params = queryset.order_by().values("pk").query.sql_with_params()
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return Total(max(int(plan[0]["Plan"]["Plan Rows"]), EXACT_COUNT_LIMIT + 1), False)


def selection_runbooks(letter_filter: LetterFilter, *, scan: int = 10_000) -> list[Runbook]:
    """Runbooks of the rules and fingerprint groups that cover a selection (its first ``scan``
    letters): shown on plans built from it."""
    sample = letter_filter.apply().order_by("id")[:scan]
    rule_ids = {r for r in sample.values_list("rule_id", flat=True) if r}
    fingerprints = {f for f in sample.values_list("fingerprint", flat=True) if f}
    return list(
        Runbook.objects.filter(Q(rules__id__in=rule_ids) | Q(groups__fingerprint__in=fingerprints))
        .distinct()
        .order_by("title")
    )


# -- groups ------------------------------------------------------------------------------------


GROUP_WORK = ("open", "all")


def groups_page(
    *, order: str = "count", limit: int = 50, offset: int = 0, work: str = "open"
) -> list[FingerprintGroup]:
    """Fingerprint groups, biggest or most recent first, each with a 14-day daily trend, the
    category of its newest letter and its open letters (one query per page, not per group).
    ``work="open"`` (the default, issue 15): only groups with open letters, read through the
    open-letters partial index, so a group whose work is done leaves the page."""
    ordering = {"count": ["-letter_count", "-last_seen"], "recent": ["-last_seen"]}.get(order)
    if ordering is None:
        raise InvalidInput("order: count or recent")
    if work not in GROUP_WORK:
        raise InvalidInput("show: open or all")
    groups_qs = FingerprintGroup.objects.select_related("runbook").order_by(*ordering)
    if work == "open":
        open_letters = DeadLetter.objects.filter(fingerprint=OuterRef("fingerprint"), state__in=OPEN_STATES)
        # reopened: a replayed letter of the group came back and the letter it came back as is open
        open_returns = DeadLetter.objects.filter(
            fingerprint=OuterRef("fingerprint"), state=DeadLetterState.RETURNED, returns__state__in=OPEN_STATES
        )
        groups_qs = groups_qs.filter(Exists(open_letters) | Exists(open_returns))
    groups = list(groups_qs[offset : offset + limit])
    _attach_trends(groups)
    _attach_latest_category(groups)
    _attach_open_counts(groups)
    return groups


def group_detail(fingerprint: str) -> FingerprintGroup:
    group = FingerprintGroup.objects.select_related("runbook", "sample").get(fingerprint=fingerprint)
    _attach_trends([group])
    _attach_latest_category([group])
    _attach_open_counts([group])
    group.dlqs = list(DeadLetterQueue.objects.filter(pk__in=group.dlq_ids).order_by("name"))
    return group


TREND_DAYS = 14


def _attach_open_counts(groups: list[FingerprintGroup]) -> None:
    """Each group's open work (``open_count``): its open letters, counted on the open-letters
    partial index, and the open letters its replayed letters came back as (a reopened group)."""
    if not groups:
        return
    fingerprints = [g.fingerprint for g in groups]
    counts = dict(
        DeadLetter.objects.filter(fingerprint__in=fingerprints, state__in=OPEN_STATES)
        .order_by()
        .values_list("fingerprint")
        .annotate(n=Count("id"))
    )
    returns = dict(
        DeadLetter.objects.filter(
            returned_from__fingerprint__in=fingerprints, returned_from__state=DeadLetterState.RETURNED,
            state__in=OPEN_STATES,
        )
        .exclude(fingerprint=F("returned_from__fingerprint"))  # counted above already
        .order_by()
        .values_list("returned_from__fingerprint")
        .annotate(n=Count("id"))
    )  # fmt: skip
    for group in groups:
        group.open_count = counts.get(group.fingerprint, 0) + returns.get(group.fingerprint, 0)


def _attach_trends(groups: list[FingerprintGroup]) -> None:
    if not groups:
        return
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=TREND_DAYS - 1)
    rows = (
        DeadLetter.objects.filter(fingerprint__in=[g.fingerprint for g in groups], captured_at__gte=start)
        .annotate(day=TruncDay("captured_at"))
        .values("fingerprint", "day")
        .annotate(n=Count("id"))
    )
    counts: dict[str, dict[datetime, int]] = {}
    for row in rows:
        counts.setdefault(row["fingerprint"], {})[row["day"]] = row["n"]
    for group in groups:
        per_day = counts.get(group.fingerprint, {})
        group.trend = [per_day.get(start + timedelta(days=i), 0) for i in range(TREND_DAYS)]


def _attach_latest_category(groups: list[FingerprintGroup]) -> None:
    if not groups:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT g.fp, l.category, l.disposition FROM unnest(%s::text[]) AS g(fp) CROSS JOIN LATERAL ("
            " SELECT category, disposition FROM recovery_deadletter WHERE fingerprint = g.fp"
            " ORDER BY captured_at DESC LIMIT 1) AS l",
            [[g.fingerprint for g in groups]],
        )
        latest = {fp: (category, disposition) for fp, category, disposition in cursor.fetchall()}
    for group in groups:
        group.category, group.disposition = latest.get(group.fingerprint, ("unknown", "hold"))


# -- overview ----------------------------------------------------------------------------------


@dataclass
class DlqSummary:
    dlq: DeadLetterQueue
    total: int
    by_category: dict[str, int]
    by_state: dict[str, int]
    oldest: datetime | None
    expiring_soon: int
    open: int = 0


def dlq_summaries(*, work: str = "open") -> list[DlqSummary]:
    """Per DLQ: its open letters, counts by category (of open letters with ``work="open"``, the
    default: issue 15) and by state, the oldest letter (open, or not discarded with
    ``work="all"``), and how many of those expire within 24 hours."""
    if work not in GROUP_WORK:
        raise InvalidInput("show: open or all")
    open_states = {state.value for state in OPEN_STATES}
    latest = CapturePass.objects.filter(dlq=OuterRef("pk")).order_by("-created_at")
    dlqs = list(
        DeadLetterQueue.objects.select_related("broker")
        .annotate(
            last_pass_state=Subquery(latest.values("state")[:1]),
            last_pass_error=Subquery(latest.values("error")[:1]),
            last_pass_remaining=Subquery(latest.values("remaining")[:1]),  # "N remain" (capture, issue 15)
        )
        .order_by("name")
    )
    by_category: dict[int, dict[str, int]] = {}
    by_state: dict[int, dict[str, int]] = {}
    for row in DeadLetter.objects.order_by().values("dlq_id", "category", "state").annotate(n=Count("id")):
        states = by_state.setdefault(row["dlq_id"], {})
        states[row["state"]] = states.get(row["state"], 0) + row["n"]
        if work == "open" and row["state"] not in open_states:
            continue
        cats = by_category.setdefault(row["dlq_id"], {})
        cats[row["category"]] = cats.get(row["category"], 0) + row["n"]
    counted = (
        DeadLetter.objects.filter(state__in=open_states)
        if work == "open"
        else DeadLetter.objects.exclude(state=DeadLetterState.DISCARDED)
    )
    oldest = dict(counted.order_by().values_list("dlq_id").annotate(oldest=Min("captured_at")))
    now = timezone.now()
    expiring = dict(
        counted.filter(expires_at__gte=now, expires_at__lt=now + timedelta(hours=24))
        .order_by()
        .values_list("dlq_id")
        .annotate(n=Count("id"))
    )
    return [
        DlqSummary(
            dlq=dlq,
            total=sum(by_state.get(dlq.pk, {}).values()),
            by_category=dict(sorted(by_category.get(dlq.pk, {}).items())),
            by_state=dict(sorted(by_state.get(dlq.pk, {}).items())),
            oldest=oldest.get(dlq.pk),
            expiring_soon=expiring.get(dlq.pk, 0),
            open=sum(n for state, n in by_state.get(dlq.pk, {}).items() if state in open_states),
        )
        for dlq in dlqs
    ]


def arrivals(*, hours: int = 48) -> list[tuple[datetime, int]]:
    """Letters captured per hour over the last ``hours`` hours (zeros included), oldest first."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    rows = dict(
        DeadLetter.objects.filter(captured_at__gte=start)
        .annotate(hour=TruncHour("captured_at"))
        .order_by()
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    return [(start + timedelta(hours=i), rows.get(start + timedelta(hours=i), 0)) for i in range(hours)]


def expiring_letters(*, hours: int = 24, limit: int = 20, work: str = "open") -> QuerySet[DeadLetter]:
    """Letters the broker would have dropped within ``hours``: open ones (``work="open"``), or
    all but the discarded."""
    now = timezone.now()
    letters = DeadLetter.objects.filter(expires_at__gte=now, expires_at__lt=now + timedelta(hours=hours))
    return (
        (letters.filter(state__in=OPEN_STATES) if work == "open" else letters.exclude(state=DeadLetterState.DISCARDED))
        .select_related("dlq")
        .defer(*LIST_DEFERRED)
        .order_by("expires_at")[:limit]
    )


def chart_points(values: list[int], *, width: int = 600, height: int = 120) -> dict[str, Any]:
    """Coordinates for a server-rendered SVG bar chart or sparkline (no JavaScript needed)."""
    top = max(values) if values and max(values) > 0 else 1
    step = width / max(len(values), 1)
    bars = [
        {"x": round(i * step, 1), "w": round(max(step - 1, 1), 1), "h": round(v * height / top, 1), "v": v}
        for i, v in enumerate(values)
    ]
    for bar in bars:
        bar["y"] = round(height - bar["h"], 1)
    line = " ".join(
        f"{round(i * step + step / 2, 1)},{round(height - v * height / top, 1)}" for i, v in enumerate(values)
    )
    return {"bars": bars, "line": line, "width": width, "height": height, "max": max(values) if values else 0}
