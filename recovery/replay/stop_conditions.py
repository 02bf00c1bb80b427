"""Stop conditions: what makes a running replay pause (or abort) on its own (issue 6, part 6).

Each is a function ``(run, now, params) -> CheckResult`` registered in recovery.replay.checks;
``ok`` False means tripped, and the reason says by how much. Every condition takes ``action``:
``pause`` (the default) or ``abort``, returned in ``details["action"]``. A condition that cannot
be evaluated (broker or health URL unreachable, invalid configuration) trips: pausing is the
safe side, and an operator can resume.

Where the numbers come from:
- publishes: LedgerEntry.published_at (when the batch went out; set once the broker confirmed it,
  invariant 2);
- failed publish attempts: the engine's ``publish-error`` run events, one per batch with the
  count of unconfirmed messages. A ledger row is FAILED only after its last retry and has no
  failure time, so the events are the only timed record of every failed attempt;
- re-dead-letters: DeadLetter rows captured with an ``x-replay-id`` of this plan's items.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max
from django.utils import timezone

from recovery.models import DeadLetter, LedgerEntry, PlanItem, PlanItemState, ReplayRun, RunEvent
from recovery.replay.checks import (
    DEPTH_PARAMS,
    HTTP_PARAMS,
    CheckKind,
    CheckResult,
    Param,
    describe_count,
    failed,
    http_get,
    integer,
    number,
    passed,
    percent,
    plan_targets,
    read_depths,
    register,
    run_checks,
)

PUBLISH_ERROR_EVENT = "publish-error"  # written by recovery.replay.engine for a batch with failures
UNREACHABLE_EVENT = "target-unreachable"  # the engine could not reach the target at all (one failure each)
MAX_WINDOW_S = 24 * 3600
RATE_PARAMS = (
    Param("max_percent", number(0, 100)),
    Param("window_s", integer(1, MAX_WINDOW_S)),
)


def evaluate_stop_conditions(run: ReplayRun, *, now: datetime | None = None) -> list[CheckResult]:
    """Every stop condition of the run's plan; those with ``ok`` False tripped. Never raises."""
    now = now or timezone.now()
    results = run_checks(CheckKind.STOP_CONDITIONS, run.plan.stop_conditions or [], run, now)
    out = []
    for result in results:
        params = result.details.get("params")
        action = params.get("action") if isinstance(params, dict) else None  # an invalid entry has none
        action = action if action in ("pause", "abort") else "pause"
        out.append(replace(result, details={**result.details, "action": action}))
    return out


def _window_start(run: ReplayRun, now: datetime, window_s: int) -> datetime:
    """The window, but never before the run started (earlier runs of the plan do not count)."""
    return max(now - timedelta(seconds=window_s), run.started_at or run.created_at)


def _published_between(run: ReplayRun, since: datetime, now: datetime) -> int:
    return LedgerEntry.objects.filter(run=run, published_at__gte=since, published_at__lte=now).count()


_ERRORS_IN_MESSAGE = re.compile(r"^(\d+) of \d+")


def _event_errors(data: Any, message: str) -> int:
    """Failed attempts a publish-error event records: ``data["errors"]``, else the engine's
    message ("3 of 10 not confirmed: ..."), else one."""
    if isinstance(data, dict) and isinstance(data.get("errors"), int):
        return data["errors"]
    match = _ERRORS_IN_MESSAGE.match(message)
    return int(match.group(1)) if match else 1


@register(CheckKind.STOP_CONDITIONS, "redeadletter_rate", params=(*RATE_PARAMS, Param("min_published", integer(1), 5)))
def redeadletter_rate(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """Replayed messages coming back to a DLQ: letters captured in the window carrying a replay
    id of this plan, over messages published in the window. Judged once ``min_published``
    were published in the window (a single early failure is not a rate)."""
    since = _window_start(run, now, params["window_s"])
    published = _published_between(run, since, now)
    replay_ids = PlanItem.objects.filter(plan_id=run.plan_id, state=PlanItemState.INCLUDED).values("replay_id")
    back = (
        DeadLetter.objects.exclude(replay_id="")
        .filter(replay_id__in=replay_ids, captured_at__gte=since, captured_at__lte=now)
        .count()
    )
    evidence = {"published": published, "redeadlettered": back, "since": since.isoformat()}
    window, limit = f"{params['window_s']} s", percent(params["max_percent"])
    if published < params["min_published"]:
        return passed(
            f"{describe_count(published, 'message')} published in the last {window} ({back} came back); "
            f"the rate is judged from {params['min_published']} on",
            **evidence,
        )
    rate = 100 * back / published
    evidence["rate_percent"] = round(rate, 2)
    summary = f"re-dead-letter rate {percent(rate)} ({back} of {published}) over {window}"
    if rate > params["max_percent"]:
        return failed(f"{summary} > {limit}", **evidence)
    return passed(f"{summary} ≤ {limit}", **evidence)


@register(CheckKind.STOP_CONDITIONS, "publish_error_rate", params=(*RATE_PARAMS, Param("min_attempts", integer(1), 5)))
def publish_error_rate(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """Failed publish attempts over all attempts (confirmed + failed) in the window."""
    since = _window_start(run, now, params["window_s"])
    published = _published_between(run, since, now)
    events = RunEvent.objects.filter(run=run, kind=PUBLISH_ERROR_EVENT, at__gte=since, at__lte=now)
    errors = sum(_event_errors(data, message) for data, message in events.values_list("data", "message"))
    attempts = published + errors
    evidence = {"published": published, "failed_attempts": errors, "since": since.isoformat()}
    window, limit = f"{params['window_s']} s", percent(params["max_percent"])
    if attempts < params["min_attempts"]:
        return passed(
            f"{describe_count(attempts, 'publish attempt')} in the last {window} ({errors} failed); "
            f"the rate is judged from {params['min_attempts']} on",
            **evidence,
        )
    rate = 100 * errors / attempts
    evidence["rate_percent"] = round(rate, 2)
    summary = f"publish error rate {percent(rate)} ({errors} of {attempts} attempts) over {window}"
    if rate > params["max_percent"]:
        return failed(f"{summary} > {limit}", **evidence)
    return passed(f"{summary} ≤ {limit}", **evidence)


@register(CheckKind.STOP_CONDITIONS, "consecutive_failures", params=(Param("max", integer(1)),))
def consecutive_failures(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """More than ``max`` publish attempts failed in a row: the failed attempts recorded (run
    events) since the run's last confirmed publish, across all its workers."""
    last_publish = LedgerEntry.objects.filter(run=run).aggregate(at=Max("published_at"))["at"]
    events = RunEvent.objects.filter(run=run, kind__in=(PUBLISH_ERROR_EVENT, UNREACHABLE_EVENT), at__lte=now).order_by(
        "-at", "-id"
    )
    if last_publish is not None:
        events = events.filter(at__gt=last_publish)
    streak, last_error, counted = 0, "", "{}"
    for data, message in events.values_list("data", "message").iterator(chunk_size=100):
        last_error = last_error or message
        streak += _event_errors(data, message)
        if streak > params["max"]:
            counted = "at least {}"  # enough to decide; older events are not read
            break
    since = f"since the last confirmed publish at {last_publish:%H:%M:%S} UTC" if last_publish else "and none confirmed"
    evidence = {"streak": streak, "last_published_at": last_publish.isoformat() if last_publish else None}
    if streak > params["max"]:
        return failed(
            f"{counted.format(streak)} publish attempts failed in a row {since} (more than {params['max']}); "
            f"last: {last_error[:300]}",
            **evidence,
        )
    return passed(f"{streak} failed publish attempt(s) in a row (at most {params['max']})", **evidence)


@register(CheckKind.STOP_CONDITIONS, "target_depth_above", params=(Param("max", integer(1)), *DEPTH_PARAMS))
def target_depth_above(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """A target's depth (Kafka: the lag of consumer ``group``) is above ``max``: the consumer
    is not keeping up with the replay. A depth that cannot be read trips too."""
    readings = read_depths(plan_targets(run.plan), group=params["group"], queue=params["queue"])
    problems = [
        f"could not read the depth of {r.target.describe()}: {r.error}"
        if r.depth is None
        else f"{r.target.describe()} holds {r.depth:,} > {params['max']:,}"
        for r in readings
        if r.depth is None or r.depth > params["max"]
    ]
    evidence = [r.as_dict() for r in readings]
    if problems:
        return failed("; ".join(problems[:3]), depths=evidence)
    deepest = max((r.depth or 0 for r in readings), default=0)
    return passed(f"deepest target holds {deepest:,} ≤ {params['max']:,}", depths=evidence)


@register(CheckKind.STOP_CONDITIONS, "health_check_failing", params=HTTP_PARAMS)
def health_check_failing(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """The consumer's health URL does not answer with the expected status."""
    answer = http_get(params["url"], timeout_s=params["timeout_s"])
    ok = answer.status == params["expected_status"]
    return (passed if ok else failed)(answer.describe(params["expected_status"]), http=answer.as_dict())


@register(CheckKind.STOP_CONDITIONS, "max_duration", params=(Param("seconds", integer(1, 30 * 24 * 3600)),))
def max_duration(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """The run has been going longer than ``seconds`` since it started (paused time included:
    a run paused for an hour is an hour older)."""
    if run.started_at is None:
        return passed("the run has not started")
    elapsed = (now - run.started_at).total_seconds()
    evidence = {"elapsed_s": round(elapsed, 1), "started_at": run.started_at.isoformat()}
    if elapsed > params["seconds"]:
        return failed(f"running for {elapsed:,.0f} s > {params['seconds']:,} s", **evidence)
    return passed(f"running for {elapsed:,.0f} s ≤ {params['seconds']:,} s", **evidence)
