"""Verification steps: evidence that replayed messages were processed (issue 6, part 7).

Each step is a function ``(run, now, params) -> CheckResult`` registered in
recovery.replay.checks, run after the canary and after the last publish. A step with a window
is called repeatedly while it waits: until its window (counted from the run's last publish) is
over it returns ``pending`` (``ok`` False) unless it can already decide; it fails early when
the evidence is already bad (a replayed message came back) and passes early when it can
(the target drained).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min
from django.utils import timezone

from recovery.models import DeadLetter, DeadLetterQueue, LedgerEntry, ReplayRun
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
    passed,
    plan_targets,
    read_depths,
    register,
    run_checks,
    waiting,
)

MAX_WINDOW_S = 24 * 3600
EXAMPLES = 10


def run_verification_step(run: ReplayRun, step: dict[str, Any], *, now: datetime | None = None) -> CheckResult:
    """Evaluate one of the plan's verification steps for ``run``. Never raises: an invalid
    step or an error is a failed result."""
    return run_checks(CheckKind.VERIFICATIONS, [step], run, now or timezone.now())[0]


def _published(run: ReplayRun) -> dict[str, Any]:
    return LedgerEntry.objects.filter(run=run, published_at__isnull=False).aggregate(
        n=Count("id"), first=Min("published_at"), last=Max("published_at")
    )


def _at(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"


@register(CheckKind.VERIFICATIONS, "no_redeadletter_within", params=(Param("seconds", integer(1, MAX_WINDOW_S)),))
def no_redeadletter_within(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """No replayed message of this run came back to a DLQ (a letter captured with one of the
    run's replay ids since its first publish) within ``seconds`` of its last publish."""
    published = _published(run)
    if not published["n"]:
        return failed("the run has published nothing, so there is nothing to verify", published=0)
    ends = published["last"] + timedelta(seconds=params["seconds"])
    replay_ids = LedgerEntry.objects.filter(run=run, published_at__isnull=False).values("item__replay_id")
    back = DeadLetter.objects.exclude(replay_id="").filter(
        replay_id__in=replay_ids, captured_at__gte=published["first"], captured_at__lte=now
    )
    came_back = back.count()
    evidence: dict[str, Any] = {
        "published": published["n"],
        "redeadlettered": came_back,
        "last_published_at": published["last"].isoformat(),
        "window_ends_at": ends.isoformat(),
        "letters": list(back.order_by("captured_at", "id").values_list("id", flat=True)[:EXAMPLES]),
    }
    if came_back:
        return failed(
            f"{describe_count(came_back, 'replayed message')} of {published['n']:,} came back to a DLQ "
            f"(letters {', '.join(map(str, evidence['letters']))})",
            **evidence,
        )
    if now < ends:
        return waiting(
            f"none of {published['n']:,} replayed messages back so far; watching until {_at(ends)} "
            f"({(ends - now).total_seconds():.0f} s left)",
            **evidence,
        )
    slow = _slow_capture(run, params["seconds"])
    note = f" (note: {', '.join(slow)} captured less often than every {params['seconds']} s)" if slow else ""
    return passed(
        f"none of {published['n']:,} replayed messages came back within {params['seconds']} s "
        f"of the last publish{note}",
        **evidence,
        slow_capture=slow,
    )


def _slow_capture(run: ReplayRun, seconds: int) -> list[str]:
    """DLQs of the run's letters whose capture interval is longer than the window: a message
    that came back there may not have been captured yet."""
    dlqs = DeadLetterQueue.objects.filter(pk__in=LedgerEntry.objects.filter(run=run).values("letter__dlq_id"))
    return sorted(d.name for d in dlqs if d.capture_interval == 0 or d.capture_interval > seconds)


@register(
    CheckKind.VERIFICATIONS,
    "target_depth_below_within",
    params=(Param("max", integer(1)), Param("seconds", integer(1, MAX_WINDOW_S)), *DEPTH_PARAMS),
)
def target_depth_below_within(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """Every target's depth (Kafka: the lag of consumer ``group``) fell below ``max`` within
    ``seconds`` of the run's last publish: the consumer processed what was replayed."""
    published = _published(run)
    if not published["n"]:
        return failed("the run has published nothing, so there is nothing to verify", published=0)
    ends = published["last"] + timedelta(seconds=params["seconds"])
    readings = read_depths(plan_targets(run.plan), group=params["group"], queue=params["queue"])
    high = [r for r in readings if r.depth is None or r.depth >= params["max"]]
    after = (now - published["last"]).total_seconds()
    evidence = {
        "depths": [r.as_dict() for r in readings],
        "read_at": now.isoformat(),
        "seconds_after_last_publish": round(after, 1),
        "window_ends_at": ends.isoformat(),
    }
    if not high:
        deepest = max((r.depth or 0 for r in readings), default=0)
        return passed(
            f"every target below {params['max']:,} {after:.0f} s after the last publish (deepest holds {deepest:,})",
            **evidence,
        )
    state = "; ".join(
        f"{r.target.describe()} holds {r.depth:,}" if r.depth is not None else f"{r.target.describe()}: {r.error}"
        for r in high[:3]
    )
    if now < ends:
        return waiting(f"{state}, not yet below {params['max']:,}; waiting until {_at(ends)}", **evidence)
    return failed(f"{params['seconds']} s after the last publish {state}, not below {params['max']:,}", **evidence)


@register(CheckKind.VERIFICATIONS, "http_check", params=HTTP_PARAMS)
def http_check(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """An HTTP endpoint (the consumer's health or a business check) answers as expected."""
    answer = http_get(params["url"], timeout_s=params["timeout_s"])
    ok = answer.status == params["expected_status"]
    return (passed if ok else failed)(answer.describe(params["expected_status"]), http=answer.as_dict())


# The letters_resolved step (issue 15: verification with evidence) lives in its own module.
from recovery.replay import evidence as _evidence  # noqa: E402, F401 - registers its step
