"""Preconditions: what must hold before a plan's letters go out (issue 6, part 3).

Each is a function ``(plan, params) -> CheckResult`` registered in recovery.replay.checks, run
when the plan is submitted, when it is approved and when a run starts; the ones that make sense
mid-run (target, depth, health, window, other runs) also at the ``run`` stage. Every plan gets
``default_preconditions``; a plan's own entry with the same name replaces the default (a plan
may ask for ``not_near_expiry`` of 6 h instead of 1 h).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from recovery.brokers.base import DlqAddress
from recovery.brokers.registry import broker_session
from recovery.errors import RecoveryError
from recovery.models import (
    RUN_ACTIVE,
    BrokerKind,
    Category,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterState,
    Disposition,
    LedgerEntry,
    PlanItem,
    PlanItemState,
    ReplayPlan,
    ReplayRun,
)
from recovery.replay.checks import (
    DEPTH_PARAMS,
    HTTP_PARAMS,
    PROBE_TIMEOUT_S,
    WEEKDAYS,
    CheckKind,
    CheckResult,
    Param,
    PlanTarget,
    by_broker,
    clock_time,
    describe_count,
    describe_error,
    failed,
    http_get,
    integer,
    number,
    passed,
    plan_targets,
    read_depths,
    register,
    run_checks,
    target_key,
    timezone_name,
    weekdays,
)


class Stage(models.TextChoices):
    SUBMIT = "submit", "when the plan is submitted"
    APPROVE = "approve", "when the plan is approved"
    START = "start", "when a run starts"
    RUN = "run", "while a run is going"


STAGES = (Stage.SUBMIT, Stage.APPROVE, Stage.START, Stage.RUN)
BEFORE_RUN = (Stage.SUBMIT, Stage.APPROVE, Stage.START)
KAFKA_PROBE_GROUP = "dlq-console-target-probe"  # only read (offsets of a group that commits nothing)
SQS_DEDUP_WINDOW = timedelta(minutes=5)
SCHEMA_MAX_FAILURES = 20
EXAMPLES = 10


def default_preconditions(plan: ReplayPlan) -> list[dict[str, Any]]:
    """What every plan is checked for, whatever it configures."""
    return [
        {"check": "target_reachable"},
        {"check": "no_other_active_run_on_target"},
        {"check": "dispositions_allow"},
        {"check": "not_near_expiry", "min_hours": 1},
        {"check": "sqs_fifo_cooldown"},
        {"check": "json_schema"},
    ]


def evaluate_preconditions(plan: ReplayPlan, *, stage: str, only: Iterable[str] | None = None) -> list[CheckResult]:
    """The defaults and the plan's own preconditions that apply at ``stage`` (submit, approve,
    start, run); with ``only``, just those of these names (a running worker asks for the checks
    that can pause it, and does not open a connection to the target every 10 s for nothing).
    Never raises: an invalid entry or a check that errors is a failed result."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    own = plan.preconditions or []
    own = own if isinstance(own, list) else [own]  # a stored non-list fails as one invalid entry
    named = {entry.get("check") for entry in own if isinstance(entry, dict)}
    defaults = [entry for entry in default_preconditions(plan) if entry["check"] not in named]
    if only is not None:
        wanted = set(only)
        own = [entry for entry in own if isinstance(entry, dict) and entry.get("check") in wanted]
        defaults = [entry for entry in defaults if entry["check"] in wanted]
    # Two calls, so that an invalid entry's position is its place in the plan's own list.
    return run_checks(CheckKind.PRECONDITIONS, defaults, plan, stage=stage) + run_checks(
        CheckKind.PRECONDITIONS, own, plan, stage=stage
    )


def _included(plan: ReplayPlan):  # noqa: ANN202 - a queryset of the plan's included items
    return PlanItem.objects.filter(plan=plan, state=PlanItemState.INCLUDED)


def _summary(problems: list[str], limit: int = 3) -> str:
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


# -- the target ------------------------------------------------------------------------------


def _existence_probe(target: PlanTarget) -> DlqAddress | None:
    """Where ``depth`` proves the target exists; None for a RabbitMQ exchange (the adapter
    Protocol has no exchange probe; a publish to a missing exchange fails with the broker's 404)."""
    if target.broker.kind == BrokerKind.RABBITMQ:
        return DlqAddress(name=target.routing_key, vhost=target.vhost) if not target.name else None
    if target.broker.kind == BrokerKind.KAFKA:
        return DlqAddress(name=target.name, group=KAFKA_PROBE_GROUP)
    return DlqAddress(name=target.name)


@register(CheckKind.PRECONDITIONS, "target_reachable", stages=STAGES)
def target_reachable(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """Every target broker answers a ping and every target queue/topic exists."""
    targets = plan_targets(plan)
    if not targets:
        return failed("the plan has no included letter, so no target to check")
    problems: list[str] = []
    evidence: list[dict[str, Any]] = []
    for broker, group in by_broker(targets).items():
        try:
            with broker_session(broker, timeout=PROBE_TIMEOUT_S) as adapter:
                ping = adapter.ping()
                for target in group:
                    probe = _existence_probe(target)
                    if probe is None:
                        evidence.append({"target": target.describe(), "exists": None, "note": "exchange not probed"})
                        continue
                    try:
                        depth = adapter.depth(probe)
                    except RecoveryError as exc:
                        problems.append(f"{target.describe()}: {describe_error(exc)}")
                        evidence.append({"target": target.describe(), "exists": False, "error": describe_error(exc)})
                    else:
                        evidence.append({"target": target.describe(), "exists": True, "depth": depth})
                evidence.append({"broker": broker.name, "ping_ms": round(ping.latency_ms, 1)})
        except RecoveryError as exc:
            problems.append(f"broker {broker.name} does not answer: {describe_error(exc)}")
    if problems:
        return failed(_summary(problems), targets=evidence)
    brokers = len({t.broker.pk for t in targets})
    return passed(
        f"{describe_count(len(targets), 'target')} on {describe_count(brokers, 'broker')} reachable", targets=evidence
    )


@register(CheckKind.PRECONDITIONS, "target_depth_below", params=(Param("max", integer(1)), *DEPTH_PARAMS))
def target_depth_below(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """Every target's depth (Kafka: the lag of consumer ``group``) is below ``max``."""
    targets = plan_targets(plan)
    if not targets:
        return failed("the plan has no included letter, so no target to measure")
    readings = read_depths(targets, group=params["group"], queue=params["queue"])
    problems = [
        f"could not read {r.target.describe()}: {r.error}"
        if r.depth is None
        else f"{r.target.describe()} holds {r.depth:,}, not below {params['max']:,}"
        for r in readings
        if r.depth is None or r.depth >= params["max"]
    ]
    evidence = [r.as_dict() for r in readings]
    if problems:
        return failed(_summary(problems), depths=evidence)
    deepest = max(r.depth or 0 for r in readings)
    return passed(f"every target below {params['max']:,} (deepest holds {deepest:,})", depths=evidence)


@register(CheckKind.PRECONDITIONS, "http_health", params=HTTP_PARAMS)
def http_health(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """The consumer's health URL answers with the expected status."""
    answer = http_get(params["url"], timeout_s=params["timeout_s"])
    ok = answer.status == params["expected_status"]
    return (passed if ok else failed)(answer.describe(params["expected_status"]), http=answer.as_dict())


@register(CheckKind.PRECONDITIONS, "no_other_active_run_on_target", stages=STAGES)
def no_other_active_run_on_target(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """No active run of another plan publishes to one of this plan's targets."""
    mine = {t.key: t for t in plan_targets(plan)}
    conflicts: list[str] = []
    runs = ReplayRun.objects.filter(state__in=RUN_ACTIVE).exclude(plan=plan).select_related("plan").order_by("pk")
    for run in runs:
        theirs = _included(run.plan).values_list("target", flat=True).distinct()
        shared = sorted({mine[target_key(raw)].describe() for raw in theirs if raw and target_key(raw) in mine})
        conflicts.extend(f"run {run.pk} of plan {run.plan.name!r} ({run.state}) publishes to {t}" for t in shared)
    if conflicts:
        return failed(_summary(conflicts), conflicts=conflicts[:EXAMPLES])
    return passed(f"no other active run publishes to this plan's {describe_count(len(mine), 'target')}")


# -- when ------------------------------------------------------------------------------------


def _check_window(params: dict[str, Any]) -> None:
    if params["start"] == params["end"]:
        raise ValueError("start and end are equal: give a window, e.g. 22:00 to 02:00")


@register(
    CheckKind.PRECONDITIONS,
    "time_window",
    params=(
        Param("start", clock_time),
        Param("end", clock_time),
        Param("days", weekdays, list(WEEKDAYS)),
        Param("timezone", timezone_name, "UTC"),
    ),
    stages=STAGES,
    validate=_check_window,
)
def time_window(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """Now is inside the allowed window."""
    inside, reason = window_contains(params, timezone.now())
    return (passed if inside else failed)(reason)


def _clock(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def window_contains(params: dict[str, Any], at: datetime) -> tuple[bool, str]:
    """Whether ``at`` falls in the window ``start``-``end`` on ``days`` in ``timezone``. A window
    over midnight (22:00-02:00) belongs to the day it opens: with days [fri], Saturday 01:00 is
    inside and Friday 01:00 is not. The end is exclusive."""
    zone = ZoneInfo(params["timezone"])
    local = at.astimezone(zone)
    start, end, days = _clock(params["start"]), _clock(params["end"]), params["days"]
    now = local.time().replace(tzinfo=None)
    if start < end:
        opened_on: date | None = local.date() if start <= now < end else None
    elif now >= start:
        opened_on = local.date()
    elif now < end:
        opened_on = local.date() - timedelta(days=1)
    else:
        opened_on = None
    inside = opened_on is not None and WEEKDAYS[opened_on.weekday()] in days
    window = f"{_days(days)} {params['start']}-{params['end']} ({params['timezone']})"
    stamp = f"{WEEKDAYS[local.weekday()]} {local:%H:%M}"
    if inside:
        return True, f"now ({stamp}) is inside the window {window}"
    opens = _next_opening(local, start, days, zone)
    return False, f"now ({stamp}) is outside the window {window}; it opens next {opens}"


def _days(days: list[str]) -> str:
    return "every day" if len(days) == 7 else ",".join(days)


def _next_opening(local: datetime, start: time, days: list[str], zone: ZoneInfo) -> str:
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        opening = datetime.combine(day, start, tzinfo=zone)
        if opening > local and WEEKDAYS[day.weekday()] in days:
            return f"{WEEKDAYS[day.weekday()]} {opening:%Y-%m-%d %H:%M}"
    return "never"  # unreachable with a non-empty list of days


# -- the letters -----------------------------------------------------------------------------


@register(CheckKind.PRECONDITIONS, "dispositions_allow", stages=BEFORE_RUN)
def dispositions_allow(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """Every included letter may still be replayed: disposition replay (hold and poison only
    with the plan's include-held override); a discarded letter or a discard disposition never.
    Letters can be reclassified after the plan was frozen; this catches it."""
    allowed = [Disposition.REPLAY, Disposition.HOLD] if plan.include_held else [Disposition.REPLAY]
    refused = Q(letter__state=DeadLetterState.DISCARDED) | ~Q(letter__disposition__in=allowed)
    if not plan.include_held:
        refused |= Q(letter__category=Category.POISON)
    bad = _included(plan).filter(refused)
    causes: Counter[str] = Counter()
    for state, disposition, category, n in bad.values_list(
        "letter__state", "letter__disposition", "letter__category"
    ).annotate(n=Count("id")):
        if state == DeadLetterState.DISCARDED:
            causes["discarded"] += n
        elif disposition not in allowed:
            causes[f"disposition {disposition}"] += n
        else:
            causes[f"category {category}"] += n
    total = sum(causes.values())
    if total:
        examples = list(bad.order_by("letter_id").values_list("letter_id", flat=True)[:EXAMPLES])
        why = ", ".join(f"{n:,} {cause}" for cause, n in sorted(causes.items(), key=lambda c: (-c[1], c[0])))
        hint = "" if plan.include_held else " (held letters need the plan's include-held override)"
        return failed(
            f"{describe_count(total, 'included letter')} may not be replayed: {why}{hint}; "
            f"e.g. letters {', '.join(map(str, examples))}",
            causes=dict(causes),
            letters=examples,
        )
    return passed("every included letter's disposition allows replay")


@register(
    CheckKind.PRECONDITIONS, "not_near_expiry", params=(Param("min_hours", number(0, 24 * 365)),), stages=BEFORE_RUN
)
def not_near_expiry(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """No included letter expires on its broker within ``min_hours`` (or has already)."""
    now = timezone.now()
    limit = now + timedelta(hours=params["min_hours"])
    near = _included(plan).filter(letter__expires_at__lt=limit)
    stats = near.aggregate(n=Count("id"), first=Min("letter__expires_at"), expired=Count("id", filter=Q(
        letter__expires_at__lte=now)))  # fmt: skip
    if stats["n"]:
        examples = list(near.order_by("letter__expires_at").values_list("letter_id", flat=True)[:EXAMPLES])
        expired = f" ({stats['expired']:,} already expired)" if stats["expired"] else ""
        return failed(
            f"{describe_count(stats['n'], 'included letter')} expire{'s' if stats['n'] == 1 else ''} within "
            f"{params['min_hours']:g} h{expired}; the first at {stats['first']:%Y-%m-%d %H:%M} UTC; "
            f"e.g. letters {', '.join(map(str, examples))}",
            count=stats["n"],
            expired=stats["expired"],
            first_expiry=stats["first"].isoformat(),
            letters=examples,
        )
    return passed(f"no included letter expires within {params['min_hours']:g} h")


@register(CheckKind.PRECONDITIONS, "json_schema", stages=BEFORE_RUN)
def json_schema(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """Each included letter's body validates against its DLQ's replay schema, where one is set.
    Stops after the first 20 failures (the counts say how many letters were not checked)."""
    dlq_ids = _included(plan).values_list("letter__dlq_id", flat=True).distinct()
    dlqs = [d for d in DeadLetterQueue.objects.filter(pk__in=dlq_ids).order_by("pk") if d.replay_schema]
    if not dlqs:
        return passed("no DLQ of this plan's letters has a replay schema")
    failures: list[dict[str, Any]] = []
    checked = 0
    to_check = _included(plan).filter(letter__dlq__in=dlqs).count()
    for dlq in dlqs:
        try:
            validator_class = validator_for(dlq.replay_schema)
            validator_class.check_schema(dlq.replay_schema)
        except SchemaError as exc:
            return failed(f"the replay schema of DLQ {dlq.name} is not a valid JSON Schema: {exc.message[:300]}")
        validator = validator_class(dlq.replay_schema)
        letters = DeadLetter.objects.filter(
            plan_items__plan=plan, plan_items__state=PlanItemState.INCLUDED, dlq=dlq
        ).order_by("pk")
        for letter_id, body in letters.values_list("id", "body").iterator(chunk_size=500):
            checked += 1
            error = _schema_error(validator, bytes(body or b""))
            if error:
                failures.append({"letter": letter_id, "dlq": dlq.name, "error": error})
                if len(failures) >= SCHEMA_MAX_FAILURES:
                    break
        if len(failures) >= SCHEMA_MAX_FAILURES:
            break
    evidence = {"checked": checked, "failed": len(failures), "unchecked": to_check - checked, "failures": failures}
    if failures:
        stopped = f"; stopped after {len(failures)}, {to_check - checked:,} not checked" if to_check > checked else ""
        first = failures[0]
        return failed(
            f"{len(failures)} of {checked:,} checked bodies fail their DLQ's replay schema{stopped}; "
            f"first: letter {first['letter']}: {first['error']}",
            **evidence,
        )
    return passed(f"all {checked:,} bodies validate against their DLQ's replay schema", **evidence)


def _schema_error(validator: Any, body: bytes) -> str:
    """Why a body fails the schema ('' when it passes); hostile bodies are data (invariant 10)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return f"not JSON: {str(exc)[:200]}"
    try:
        error = next(iter(validator.iter_errors(document)), None)
    except RecursionError:
        return "too deeply nested to validate"
    if error is None:
        return ""
    return f"{error.message[:200]} at {error.json_path}"


# -- SQS FIFO ----------------------------------------------------------------------------------


@register(CheckKind.PRECONDITIONS, "sqs_fifo_cooldown", stages=BEFORE_RUN)
def sqs_fifo_cooldown(plan: ReplayPlan, params: dict[str, Any]) -> CheckResult:
    """No earlier run of this plan published to an SQS FIFO target less than 5 minutes ago: the
    replay id is the MessageDeduplicationId, and SQS silently drops a message whose id it saw
    within 5 minutes, so a re-run inside that window would 'publish' nothing."""
    fifo = [t for t in plan_targets(plan) if t.broker.kind == BrokerKind.SQS and t.name.endswith(".fifo")]
    if not fifo:
        return passed("no SQS FIFO target")
    now = timezone.now()
    since = now - SQS_DEDUP_WINDOW
    problems, evidence = [], []
    for target in fifo:
        last = (
            LedgerEntry.objects.filter(run__plan=plan, item__target=target.raw, published_at__gte=since)
            .values("run_id")
            .annotate(at=Max("published_at"))
            .order_by("-at")
            .first()
        )
        if last is None:
            continue
        free_at = last["at"] + SQS_DEDUP_WINDOW
        wait = (free_at - now).total_seconds()
        problems.append(
            f"run {last['run_id']} of this plan published to {target.describe()} at {last['at']:%H:%M:%S} UTC; "
            f"SQS would drop the same deduplication ids until {free_at.astimezone(UTC):%H:%M:%S} UTC "
            f"(wait {wait:.0f} s)"
        )
        evidence.append(
            {"target": target.describe(), "run": last["run_id"], "last_published_at": last["at"].isoformat(),
             "free_at": free_at.isoformat()}
        )  # fmt: skip
    if problems:
        return failed(_summary(problems), targets=evidence)
    return passed(f"no run of this plan published to its {describe_count(len(fifo), 'FIFO target')} in the last 5 min")
