"""The circuit breaker of a replay run (issue 15, part 3).

A plan with ``breaker_cooldown_seconds`` > 0 turns the pause of a stop condition into an open
breaker: the run stays paused for the cool-down, then the scheduler's replay watchdog (``tick``)
half-opens it: the run runs again in phase ``probe``, sending one small batch
(``breaker_probe_size`` letters, claims serialised like the canary's so workers never overshoot
it). After the probe's last letter is recorded and the plan's canary window has passed, the stop
conditions are evaluated: if none trips the breaker closes and the run resumes at the start of its
ramp (``ramp-0``, the canary rate); if one trips, at any time during the probe, the run is paused
again and the breaker re-opens for another cool-down. Each probe is recorded on the run
(``ReplayRun.breaker["probes"]``, shown on the run page) and as a ``breaker-probe`` run event.

Invariant 6 (stop fast) still holds: a probe is an ordinary phase, so pause and abort take effect
within a second; invariant 8: every change of the run's state here writes its audit event.
The cool-down should be longer than the stop conditions' windows, so the probe is judged on its
own letters rather than on those that tripped the breaker.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.errors import InvalidInput
from recovery.models import LEASED_ROWS, AuditAction, LedgerEntry, ReplayRun, RunEvent, RunState

PROBE_PHASE = "probe"
OPEN, HALF_OPEN, CLOSED = "open", "half-open", "closed"
EVENT = "breaker-probe"


MAX_COOLDOWN_S = 24 * 3600
MAX_PROBE = 1000


def validate_breaker(plan: dict[str, Any]) -> None:
    """Raise InvalidInput for a cool-down or probe size out of range (plan_update)."""
    for name, low, high, label in (("breaker_cooldown_seconds", 0, MAX_COOLDOWN_S, "circuit breaker cool-down (s)"),
                                   ("breaker_probe_size", 1, MAX_PROBE, "circuit breaker probe size")):  # fmt: skip
        value = plan.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{label}: a whole number from {low:,} to {high:,} (got {value!r})")


def _claimed(run: ReplayRun) -> int:
    return LedgerEntry.objects.filter(run=run, attempts__gt=0).count()


def probe_cap(run: ReplayRun) -> int:
    """How many ledger rows may have been claimed by the end of the probe (engine claims)."""
    return int((run.breaker or {}).get("claimed_before", 0)) + run.plan.breaker_probe_size


def _probe_rate(run: ReplayRun) -> float:
    steps = run.plan.ramp_steps or []
    rate = run.plan.rate_per_second * (steps[0] / 100 if steps else 1)
    return max(float(rate), 0.1)


def breaker_opened(run: ReplayRun, *, reason: str) -> None:
    """A stop condition paused ``run`` (called by engine.stop_run inside its transaction): open
    the breaker if the plan has one; a probe in flight failed."""
    if not run.plan.breaker_cooldown_seconds:
        return
    current = ReplayRun.objects.select_for_update().values_list("breaker", "phase").get(pk=run.pk)
    breaker: dict[str, Any] = dict(current[0] or {})
    now = timezone.now()
    probes = list(breaker.get("probes", []))
    if current[1] == PROBE_PHASE and breaker.get("state") == HALF_OPEN:
        probes.append({"started_at": breaker.get("probe_started_at"), "ended_at": now.isoformat(), "passed": False,
                       "reason": reason[:500]})  # fmt: skip
        RunEvent.objects.create(run=run, kind=EVENT, message=f"probe failed: {reason}"[:1000],
                                data={"passed": False})  # fmt: skip
    retry_at = now + timedelta(seconds=run.plan.breaker_cooldown_seconds)
    ReplayRun.objects.filter(pk=run.pk).update(
        breaker={"state": OPEN, "opened_at": now.isoformat(), "retry_at": retry_at.isoformat(), "probes": probes}
    )


def tick(*, now: datetime | None = None) -> list[int]:
    """Half-open every breaker whose cool-down is over at ``now``: the run runs a probe (one worker)."""
    now = now or timezone.now()
    probing = []
    for run in ReplayRun.objects.filter(state=RunState.PAUSED, breaker__state=OPEN).select_related("plan"):
        retry_at = datetime.fromisoformat(run.breaker.get("retry_at", now.isoformat()))
        if retry_at <= now and _half_open(run, timezone.now()):  # the probe starts now, whatever ``now`` says
            probing.append(run.pk)
    return probing


def _half_open(run: ReplayRun, now: datetime) -> bool:
    from recovery.replay.engine import enqueue_worker

    with transaction.atomic():
        breaker = {**run.breaker, "state": HALF_OPEN, "probe_started_at": now.isoformat(),
                   "claimed_before": _claimed(run)}  # fmt: skip
        moved = ReplayRun.objects.filter(pk=run.pk, state=RunState.PAUSED, breaker__state=OPEN).update(
            state=RunState.RUNNING, control="run", phase=PROBE_PHASE, phase_started_at=now, breaker=breaker
        )
        if not moved:
            return False
        size = run.plan.breaker_probe_size
        RunEvent.objects.create(run=run, kind=EVENT, message=f"cool-down over: probing with {size} letter(s)",
                                data={"state": HALF_OPEN})  # fmt: skip
        audit_record(actor="replay", action=AuditAction.RUN_RESUMED, obj=run,
                     summary=f"run {run.pk} half-opened by its circuit breaker: a probe of {size} letter(s)",
                     reason=run.stop_reason[:2000])  # fmt: skip
        enqueue_worker(run.pk, 0)
    return True


def probe_phase(run: ReplayRun) -> tuple[float, int]:
    """The engine's (rate, allowance) in phase ``probe``: the probe's rows; then, once they are
    recorded and the canary window passed, the verdict (0 = wait)."""
    remaining = probe_cap(run) - _claimed(run)
    if remaining > 0:
        return _probe_rate(run), remaining
    if LedgerEntry.objects.filter(LEASED_ROWS, run=run).exists():
        return 0.0, 0  # the probe is still out
    last = LedgerEntry.objects.filter(run=run, published_at__isnull=False).order_by("-published_at").first()
    sent = max(last.published_at if last else run.phase_started_at, run.phase_started_at or timezone.now())
    if (timezone.now() - sent).total_seconds() < run.plan.canary_window_seconds:
        return 0.0, 0
    _judge(run)
    return 0.0, 0


def _judge(run: ReplayRun) -> None:
    from recovery.replay.engine import enqueue_worker, stop_run
    from recovery.replay.stop_conditions import evaluate_stop_conditions

    tripped = [r for r in evaluate_stop_conditions(run) if not r.ok]
    if tripped:
        action = "abort" if any(r.details.get("action") == "abort" for r in tripped) else "pause"
        stop_run(run, reason="probe: " + "; ".join(f"{r.name}: {r.reason}" for r in tripped), action=action)
        return
    now = timezone.now()
    with transaction.atomic():
        current = ReplayRun.objects.select_for_update().get(pk=run.pk)
        if current.phase != PROBE_PHASE or current.state != RunState.RUNNING:
            return
        breaker = dict(current.breaker or {})
        probes = [*breaker.get("probes", []), {"started_at": breaker.get("probe_started_at"),
                                               "ended_at": now.isoformat(), "passed": True,
                                               "reason": "no stop condition tripped"}]  # fmt: skip
        current.breaker = {"state": CLOSED, "closed_at": now.isoformat(), "probes": probes}
        current.phase, current.phase_started_at, current.stop_reason = "ramp-0", now, ""
        current.save(update_fields=["breaker", "phase", "phase_started_at", "stop_reason"])
        RunEvent.objects.create(run=run, kind=EVENT, message="probe passed: resuming at the canary rate",
                                data={"passed": True})  # fmt: skip
        audit_record(
            actor="replay",
            action=AuditAction.RUN_RESUMED,
            obj=run,
            summary=f"run {run.pk} resumed by its circuit breaker: the probe passed the stop conditions",
        )
        for worker in range(1, run.plan.workers):
            enqueue_worker(run.pk, worker)
