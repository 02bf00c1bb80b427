"""Verification with evidence (issue 15, part 3): when a replayed letter counts as verified.

Invariant 12 (outcomes are honest): a ledger row becomes ``verified`` only with evidence, and a
run ends "verified" only when the ``letters_resolved`` step gathered it for every letter it
published. The evidence is two things:

1. **Not returned.** A capture pass of each of the run's DLQs that *started after* the
   verification window (``seconds`` after the run's last publish) and succeeded, so anything that
   came back within the window was captured; and no letter carrying one of the run's replay ids
   was captured since the run's first publish. When no such pass exists yet, the step requests
   one (as the scheduler would) and waits for it.
2. **A positive signal** where the broker gives one:
   - Kafka: the failed consumer group (the step's ``group``, else the group the dead-letter writer
     recorded, Spring's ``kafka_dlt-original-consumer-group``) has committed, on the replayed
     record's partition, an offset past the one the delivery report gave (the ledger row's
     ``broker_message_id`` is ``topic/partition/offset``);
   - SQS and RabbitMQ: the target's depth is back to (at most) its depth when the run started,
     read by ``record_baseline`` (a RabbitMQ exchange target needs ``queue``, the queue behind it).

A step that cannot gather this within ``settle_s`` after the window (no capture pass finished,
no group known, a depth that cannot be read, a consumer that never caught up) is *inconclusive*:
the run ends "completed, not verified", never "verified". A letter that came back fails the step
(the run's verification failed) and its ledger row is marked ``redeadlettered``.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Min, Q
from django.db.models.fields.json import KT
from django.utils import timezone

from recovery.brokers.base import DlqAddress
from recovery.brokers.registry import broker_session
from recovery.errors import InvalidInput, RecoveryError
from recovery.models import (
    AttemptState,
    BrokerKind,
    CapturePass,
    CaptureTrigger,
    DeadLetter,
    DeadLetterQueue,
    JobState,
    LedgerEntry,
    ReplayPlan,
    ReplayRun,
    RunState,
)
from recovery.replay.checks import (
    PROBE_TIMEOUT_S,
    CheckKind,
    CheckResult,
    Param,
    PlanTarget,
    describe_count,
    describe_error,
    failed,
    integer,
    passed,
    plan_targets,
    read_depths,
    register,
    target_key,
    text,
    waiting,
)

STEP = "letters_resolved"
MAX_WINDOW_S = 24 * 3600
EXAMPLES = 10
PARAMS = (
    Param("seconds", integer(1, MAX_WINDOW_S), 60),
    Param("settle_s", integer(0, MAX_WINDOW_S), 300),
    Param("group", text(200), ""),
    Param("queue", text(300), ""),
)


def inconclusive(reason: str, **details: Any) -> CheckResult:
    """The evidence could not be gathered: neither passed nor failed (the run is not verified)."""
    return failed(reason, inconclusive=True, **details)


def is_inconclusive(result: dict[str, Any] | CheckResult) -> bool:
    details = result.details if isinstance(result, CheckResult) else result.get("details") or {}
    return bool(isinstance(details, dict) and details.get("inconclusive"))


# -- the baseline, read when the run starts ------------------------------------------------------


def _key(raw: dict[str, Any]) -> str:
    return json.dumps(target_key(raw), default=str)


def _step_params(plan: ReplayPlan) -> dict[str, Any] | None:
    """The clean parameters of the plan's letters_resolved step, if it has one."""
    from recovery.replay.checks import parse_entry

    for position, entry in enumerate(plan.verifications or [], 1):
        if isinstance(entry, dict) and entry.get("step") == STEP:
            try:
                return parse_entry(CheckKind.VERIFICATIONS, entry, position)[1]
            except InvalidInput:
                return None
    return None


def record_baseline(run: ReplayRun) -> None:
    """Read the depth of each SQS and RabbitMQ target before anything is published, for the
    positive signal (the depth is back to it). Only for plans with a letters_resolved step; a
    target that cannot be read is recorded with its error (its evidence will be inconclusive)."""
    params = _step_params(run.plan)
    if params is None:
        return
    now = timezone.now().isoformat()
    try:
        queue_targets = [t for t in plan_targets(run.plan) if t.broker.kind != BrokerKind.KAFKA]
        readings = read_depths(queue_targets, queue=params["queue"])
    except RecoveryError as exc:  # never blocks the start: the evidence will be inconclusive
        run.baseline = {"error": describe_error(exc), "read_at": now}
    else:
        run.baseline = {
            _key(r.target.raw): {"target": r.target.describe(), "depth": r.depth, "error": r.error, "read_at": now}
            for r in readings
        }
    ReplayRun.objects.filter(pk=run.pk).update(baseline=run.baseline)


# -- the verification step -----------------------------------------------------------------------


def _returned(run: ReplayRun, since: datetime, now: datetime) -> dict[str, int]:
    """Replay id -> the new letter, for the run's letters that came back to a DLQ. A letter not
    classified yet has no ``replay_id`` (classification copies it from the header after capture),
    so its ``x-replay-id`` header is read directly: text (AMQP, Kafka) or an SQS attribute."""
    replay_ids = LedgerEntry.objects.filter(run=run, published_at__isnull=False).values("item__replay_id")
    window = {"captured_at__gte": since, "captured_at__lte": now}
    back = dict(
        DeadLetter.objects.exclude(replay_id="")
        .filter(replay_id__in=replay_ids, **window)
        .order_by("captured_at", "id")
        .values_list("replay_id", "id")
    )
    fresh = (
        DeadLetter.objects.filter(classified_by="", **window)
        .annotate(text=KT("headers__x-replay-id"), attribute=KT("headers__x-replay-id__StringValue"))
        .filter(Q(text__in=replay_ids) | Q(attribute__in=replay_ids))
        .order_by("captured_at", "id")
    )
    for letter_id, text_id, attribute_id in fresh.values_list("id", "text", "attribute"):
        back.setdefault(attribute_id or text_id, letter_id)
    return back


@register(CheckKind.VERIFICATIONS, STEP, params=PARAMS)
def letters_resolved(run: ReplayRun, now: datetime, params: dict[str, Any]) -> CheckResult:
    """Every published letter of the run was processed, with evidence (see the module docstring).
    Pending until the window is over and, for up to ``settle_s`` more, while the evidence is not
    all in; then passed, failed (letters came back) or inconclusive."""
    published = LedgerEntry.objects.filter(run=run, published_at__isnull=False).aggregate(
        first=Min("published_at"), last=Max("published_at")
    )
    if published["last"] is None:
        return inconclusive("the run has published nothing, so there is no evidence to gather")
    returned = _returned(run, published["first"], now)
    if returned:
        letters = list(returned.values())[:EXAMPLES]
        return failed(
            f"{describe_count(len(returned), 'replayed letter')} came back to a DLQ "
            f"(new letters {', '.join(map(str, letters))})",
            returned=len(returned), letters=letters, checked_at=now.isoformat(),
        )  # fmt: skip
    if run.state != RunState.VERIFYING:  # a canary: nothing back so far is all it can say
        return passed("none of the letters published so far came back", checked_at=now.isoformat())
    window_ends = published["last"] + timedelta(seconds=params["seconds"])
    give_up = window_ends + timedelta(seconds=params["settle_s"])
    evidence: dict[str, Any] = {"window_ends_at": window_ends.isoformat(), "checked_at": now.isoformat()}
    if now < window_ends:
        return waiting(f"watching for letters coming back until {window_ends:%H:%M:%S} UTC", **evidence)
    passes, missing = _capture_passes(run, window_ends)
    evidence["capture_passes"] = passes
    signals = _positive_signals(run, params) if not missing else []
    evidence["signals"] = signals
    short = [s for s in signals if not s["ok"]]
    rows = sum(s.get("letters", 0) for s in signals)
    count = LedgerEntry.objects.filter(run=run, published_at__isnull=False).count()
    if not missing and rows < count:  # every published letter needs its target's signal
        short.append({"ok": False, "reason": f"{count - rows:,} published letter(s) on no known target"})
    if not missing and not short:
        return passed(
            f"no letter came back (capture passes of {', '.join(p['dlq'] for p in passes)} after the window) "
            f"and the target{'s' if len(signals) != 1 else ''} confirmed processing of {rows:,} letter(s)",
            **evidence,
        )
    if missing:
        _request_passes(missing, window_ends)
        state = f"no capture pass of {', '.join(d.name for d in missing)} has finished since {window_ends:%H:%M:%S} UTC"
    else:
        state = "; ".join(s["reason"] for s in short[:3])
    if now < give_up:
        return waiting(f"{state}; waiting until {give_up:%H:%M:%S} UTC", **evidence)
    return inconclusive(f"could not gather the evidence: {state}", **evidence)


def _capture_passes(run: ReplayRun, after: datetime) -> tuple[list[dict[str, Any]], list[DeadLetterQueue]]:
    """For each DLQ of the run's letters, the first successful capture pass that started after
    ``after``; and the DLQs that have none yet."""
    dlqs = DeadLetterQueue.objects.filter(
        pk__in=LedgerEntry.objects.filter(run=run, published_at__isnull=False).values("letter__dlq_id")
    ).order_by("name")
    found, missing = [], []
    for dlq in dlqs:
        done = (
            CapturePass.objects.filter(dlq=dlq, state=JobState.SUCCEEDED, started_at__gte=after)
            .order_by("finished_at")
            .first()
        )
        if done is None:
            missing.append(dlq)
            continue
        found.append({"dlq": dlq.name, "pass": done.pk, "started_at": done.started_at.isoformat(),
                      "finished_at": done.finished_at.isoformat() if done.finished_at else None,
                      "captured": done.captured})  # fmt: skip
    return found, missing


def _request_passes(dlqs: list[DeadLetterQueue], after: datetime) -> None:
    """Ask for a capture pass of each DLQ that has none queued or running since ``after``."""
    from recovery.capture.services import capture_pass_request

    for dlq in dlqs:
        if CapturePass.objects.filter(
            dlq=dlq, state__in=(JobState.QUEUED, JobState.RUNNING), created_at__gte=after
        ).exists():
            continue
        # an older pass still going, or a disabled DLQ, refuses: the step stays pending meanwhile
        with contextlib.suppress(InvalidInput):
            capture_pass_request(actor="replay", dlq=dlq, trigger=CaptureTrigger.SCHEDULER)


# -- positive signals ----------------------------------------------------------------------------


def _rows_by_target(run: ReplayRun) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    fields = ("id", "broker_message_id", "item__target", "letter__failure_extras")
    for row in LedgerEntry.objects.filter(run=run, published_at__isnull=False).values(*fields).iterator(2000):
        rows[_key(row["item__target"] or {})].append(row)
    return rows


def _positive_signals(run: ReplayRun, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One reading per target of the run: ``ok`` when the broker confirms processing."""
    rows = _rows_by_target(run)
    signals = []
    for target in plan_targets(run.plan):
        mine = rows.get(_key(target.raw), [])
        if not mine:
            continue
        if target.broker.kind == BrokerKind.KAFKA:
            signals.append(_kafka_signal(target, mine, params))
        else:
            signals.append(_depth_signal(run, target, mine, params))
    return signals


def _depth_signal(run: ReplayRun, target: PlanTarget, rows: list[dict[str, Any]], params: dict[str, Any]) -> dict:
    where = target.describe()
    baseline = run.baseline or {}
    base = baseline.get(_key(target.raw)) or {"error": baseline.get("error", "")}
    signal: dict[str, Any] = {"target": where, "kind": "depth", "letters": len(rows), "baseline": base.get("depth")}
    if base.get("depth") is None:
        why = base.get("error") or "no depth was recorded when the run started"
        return {**signal, "ok": False, "reason": f"{where}: no baseline ({why})"}
    reading = read_depths([target], queue=params["queue"])[0]
    signal.update(depth=reading.depth, read_at=timezone.now().isoformat())
    if reading.depth is None:
        return {**signal, "ok": False, "reason": f"{where}: depth unreadable ({reading.error})"}
    ok = reading.depth <= base["depth"]
    verdict = "back to" if ok else "above"
    return {**signal, "ok": ok, "reason": f"{where} holds {reading.depth:,}, {verdict} {base['depth']:,} at the start"}


def _replayed_offsets(rows: list[dict[str, Any]]) -> tuple[dict[int, list[int]], int]:
    """Partition -> the replayed offsets from the delivery reports (``topic/partition/offset``);
    and how many rows had none."""
    offsets: dict[int, list[int]] = defaultdict(list)
    unknown = 0
    for row in rows:
        parts = (row["broker_message_id"] or "").rsplit("/", 2)
        if len(parts) == 3 and parts[1].lstrip("-").isdigit() and parts[2].isdigit():
            offsets[int(parts[1])].append(int(parts[2]))
        else:
            unknown += 1
    return offsets, unknown


def _kafka_group(rows: list[dict[str, Any]], params: dict[str, Any]) -> str:
    if params["group"]:
        return params["group"]
    groups = {
        (row["letter__failure_extras"] or {}).get("consumer_group")
        for row in rows
        if isinstance(row["letter__failure_extras"], dict)
    }
    groups.discard(None)
    groups.discard("")
    return next(iter(groups)) if len(groups) == 1 else ""


def _kafka_signal(target: PlanTarget, rows: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    where = target.describe()
    group = _kafka_group(rows, params)
    offsets, unknown = _replayed_offsets(rows)
    signal: dict[str, Any] = {"target": where, "kind": "committed offset", "letters": len(rows), "group": group,
                              "replayed_up_to": {str(p): max(o) for p, o in offsets.items()}}  # fmt: skip
    if not group:
        return {**signal, "ok": False, "reason": f"{where}: no consumer group known (give the step's group)"}
    if unknown:
        return {**signal, "ok": False, "reason": f"{where}: {unknown} letter(s) without a delivery report offset"}
    try:
        with broker_session(target.broker, timeout=PROBE_TIMEOUT_S) as adapter:
            committed = adapter.committed_offsets(DlqAddress(name=target.name, group=group))
    except RecoveryError as exc:
        return {**signal, "ok": False, "reason": f"{where}: offsets of {group} unreadable ({describe_error(exc)})"}
    behind = sum(1 for p, offs in offsets.items() for o in offs if committed.get(p, -1) <= o)
    signal.update(committed={str(p): o for p, o in sorted(committed.items())}, behind=behind,
                  read_at=timezone.now().isoformat())  # fmt: skip
    if behind:
        return {**signal, "ok": False, "reason": f"{where}: group {group} has not committed past {behind:,} letter(s)"}
    return {**signal, "ok": True, "reason": f"{where}: group {group} committed past every replayed offset"}


# -- the run's outcome ---------------------------------------------------------------------------


def run_outcome(run: ReplayRun, results: list[CheckResult]) -> tuple[str, str]:
    """The state a run ends in after its verification steps, and why (invariant 12)."""
    if run.failed:
        return RunState.FAILED, f"{run.failed} letter(s) could not be published"
    if not results:
        return RunState.COMPLETED_NOT_VERIFIED, "no verification step configured"
    bad = [r for r in results if not r.ok and not is_inconclusive(r)]
    if bad:
        return RunState.VERIFICATION_FAILED, "; ".join(f"{r.name}: {r.reason}" for r in bad)
    unsure = [r for r in results if is_inconclusive(r)]
    if unsure:
        return RunState.COMPLETED_NOT_VERIFIED, "; ".join(f"{r.name}: {r.reason}" for r in unsure)
    if not any(r.name == STEP for r in results):
        return RunState.COMPLETED_NOT_VERIFIED, (
            f"all {len(results)} verification step(s) passed, but none gathered evidence per letter ({STEP})"
        )
    return RunState.VERIFIED, f"all {len(results)} verification step(s) passed, with evidence per letter"


def settle_ledger(run: ReplayRun, *, state: str) -> tuple[int, int]:
    """Mark the run's ledger once it ends (inside finish_run's transaction): letters that came
    back become ``redeadlettered``; on a verified run every other published row becomes
    ``verified``. This is the one place ledger rows become verified (the letter lifecycle hooks
    here). Returns (verified, redeadlettered)."""
    first = LedgerEntry.objects.filter(run=run, published_at__isnull=False).aggregate(at=Min("published_at"))["at"]
    if first is None:
        return 0, 0
    returned = _returned(run, first, timezone.now())
    back = 0
    if returned:
        back = LedgerEntry.objects.filter(
            run=run, state=AttemptState.PUBLISHED, item__replay_id__in=list(returned)
        ).update(state=AttemptState.REDEADLETTERED)
        ReplayRun.objects.filter(pk=run.pk).update(redeadlettered=back)
    verified = 0
    if state == RunState.VERIFIED:
        verified = LedgerEntry.objects.filter(run=run, state=AttemptState.PUBLISHED).update(state=AttemptState.VERIFIED)
    return verified, back
