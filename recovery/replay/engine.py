"""The replay engine: worker jobs that move a run's ledger from pending to published.

Each worker, in a loop:
1. reads the run's control and phase (pause/abort seen within one limiter slice, < 1 s);
2. claims a batch of ledger rows with a lease and a new fencing token per row (conditional
   UPDATE ... FOR UPDATE SKIP LOCKED; expired leases are claimable again; a HOT update, see
   LedgerEntry) - invariant 4;
3. takes the batch's tokens from the run's one Redis limiter at the current phase's rate
   (canary, ramp steps, full) - invariant 5;
4. publishes through the target's adapter with broker confirmation per message - invariant 2,
   each carrying x-replay-id, x-original-message-id and traceparent - invariant 3;
5. records each outcome only while it still holds the row's token (row count checked): a worker
   whose lease expired and whose rows were re-claimed records nothing - invariant 4.
Claiming the next batch and recording the last one run on the worker's ledger thread (a second
database connection, recovery.replay.ledger) while it publishes, so the broker and PostgreSQL
work at the same time.

A worker that dies mid-batch leaves leased rows; they become claimable when the lease expires
and are published again with the same x-replay-id (a consumer dedupes on it). The scheduler's
watchdog re-enqueues workers of a running run whose heartbeats stopped. Stop conditions are
evaluated at most once a second by whichever worker gets there first - invariant 6.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.brokers.registry import adapter_for
from recovery.errors import RecoveryError
from recovery.faults import fault_point
from recovery.jobs.queue import enqueue
from recovery.letters import lifecycle
from recovery.models import (
    LEASED_ROWS,
    AttemptState,
    AuditAction,
    Broker,
    DeadLetterState,
    LedgerEntry,
    PlanState,
    ReplayPlan,
    ReplayRun,
    RunEvent,
    RunState,
)
from recovery.observability import replay as telemetry
from recovery.replay import breaker, messages, ordering
from recovery.replay.evidence import run_outcome as evidence_outcome
from recovery.replay.evidence import settle_ledger
from recovery.replay.ledger import BATCH_UPDATE_PLAN, CLAIM_PLAN, HELD_BY_OWNER, LedgerThread, Outcome
from recovery.replay.limiter import LimiterUnavailable, RateLimiter, limiter_client
from recovery.replay.selectors import failing_preconditions
from recovery.replay.stop_conditions import evaluate_stop_conditions
from recovery.replay.targets import as_target
from recovery.replay.verification import run_verification_step

log = logging.getLogger(__name__)

SLICE = 0.2  # seconds between control checks while waiting
WORKER_SECONDS = 600  # a worker job re-enqueues itself after this long (jobs stay short)
HEARTBEAT_TTL = 15
ENQUEUE_GRACE = 4 * HEARTBEAT_TTL  # seconds an enqueued worker has to report its first heartbeat
# Delete a worker's heartbeat key only while it is still this worker's (not its successor's grace).
_RELEASE_HEARTBEAT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
RUN_STAGE_PRECONDITIONS = {"time_window", "http_health", "target_depth_below"}


def _redis() -> redis.Redis:
    """Short timeouts and one retry: a dead Redis must not hold a worker past the 1 s stop."""
    return limiter_client(settings.REDIS_URL)


def _heartbeat_key(run_id: int, worker: int) -> str:
    return f"recovery:replay:{run_id}:worker:{worker}"


def enqueue_workers(run: ReplayRun) -> None:
    """Enqueue the plan's number of workers (on commit of the caller's transaction)."""
    for worker in range(run.plan.workers):
        enqueue_worker(run.pk, worker)


def enqueue_worker(run_id: int, worker: int) -> None:
    """Enqueue one worker job on commit, and give it ENQUEUE_GRACE seconds to report before the
    watchdog takes it as lost: its heartbeat key reads "enqueued" until the worker's first beat.
    (Without it the watchdog re-enqueued a worker in the second its run started.)"""
    transaction.on_commit(lambda: _mark_enqueued(run_id, worker))  # before the send: a fast beat wins
    enqueue("replay_worker", run_id, worker)


def _mark_enqueued(run_id: int, worker: int) -> None:
    try:
        _redis().set(_heartbeat_key(run_id, worker), "enqueued", ex=ENQUEUE_GRACE)
    except redis.RedisError:
        log.warning("replay worker %s/%s enqueued without its grace marker (Redis unreachable)", run_id, worker)


def watchdog() -> list[tuple[int, int]]:
    """Re-enqueue the workers of running runs whose heartbeat expired (a SIGKILLed worker, a
    lost job). A worker enqueued less than ENQUEUE_GRACE seconds ago has not been lost: its key
    is still there. Claimed with SET NX so two schedulers enqueue one replacement."""
    client = _redis()
    restarted = []
    for run in ReplayRun.objects.filter(state__in=(RunState.RUNNING, RunState.VERIFYING)).select_related("plan"):
        for worker in range(run.plan.workers if run.state == RunState.RUNNING else 1):
            if client.set(_heartbeat_key(run.pk, worker), "watchdog", nx=True, ex=ENQUEUE_GRACE):
                with transaction.atomic():
                    RunEvent.objects.create(run=run, kind="worker-restarted", message=f"worker {worker} re-enqueued")
                    enqueue("replay_worker", run.pk, worker)
                restarted.append((run.pk, worker))
    return restarted


# One round trip per batch: lease the rows and read their messages' content. The rows are the
# run's first pending ones without a live lease (never claimed, given back, or whose holder's lease
# expired), found in (run, state, id) order; the claim changes no indexed column (see LedgerEntry).
_CLAIM_SQL = (
    "WITH picked AS (SELECT id FROM recovery_ledgerentry WHERE run_id = %s AND state = 'pending' AND "
    "(lease_expires_at IS NULL OR lease_expires_at < now()) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE recovery_ledgerentry l SET lease_owner = %s, "
    "lease_expires_at = now() + make_interval(secs => %s), fencing_token = l.fencing_token + 1, "
    "attempts = l.attempts + 1, resent = l.resent OR l.lease_expires_at IS NOT NULL "  # a lost holder's row
    "WHERE l.id = ANY(ARRAY(SELECT id FROM picked)) "
    "RETURNING l.id, l.letter_id, l.item_id, l.fencing_token) "
    "SELECT c.id, c.letter_id, c.item_id, c.fencing_token, i.target, i.replay_id, d.body, d.headers, d.properties, "
    "d.content_type, d.source_message_id, d.identity, d.state FROM claimed c "
    "JOIN recovery_planitem i ON i.id = c.item_id JOIN recovery_deadletter d ON d.id = c.letter_id ORDER BY c.id"
)


def _json(value: Any) -> Any:
    """A jsonb column read with a raw cursor (Django hands jsonb over as text)."""
    return json.loads(value) if isinstance(value, str | bytes) else (value if value is not None else {})


@dataclass
class Claimed:
    """A leased ledger row with what its message is made of (one query: the claim)."""

    ledger_id: int
    letter_id: int
    item_id: int
    token: int
    target: dict[str, Any]
    replay_id: str
    letter: messages.LetterContent


class Worker:
    """One worker of one run, for the length of a job."""

    def __init__(self, run_id: int, number: int) -> None:
        self.run_id = run_id
        self.number = number
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{number}:{uuid.uuid4().hex[:8]}"
        self.redis = _redis()
        self.adapters: dict[int, Any] = {}
        self.brokers = {}
        self.prepared: set[tuple[int, str, str]] = set()  # (broker, target name, vhost) connected to
        self.consecutive_failures = 0
        self.ordered = False  # set by run(): the plan has ordered groups (invariant 13)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> str:
        limiter = RateLimiter(self.redis, self.run_id)
        deadline = time.monotonic() + WORKER_SECONDS
        # Invariant 13: a run with ordered groups lets a group's next row go when it records one published.
        self.ordered = ordering.is_ordered(ReplayRun.objects.values_list("plan_id", flat=True).get(pk=self.run_id))
        self.ledger = LedgerThread(self.run_id, self.owner, ordered=self.ordered)
        self.ahead: Future[list[Claimed]] | None = None
        try:
            while True:
                self._beat()
                run = ReplayRun.objects.select_related("plan").get(pk=self.run_id)
                if run.control != "run":
                    return run.control
                if run.state == RunState.VERIFYING:
                    return self._verify(run) if self.number == 0 else "verifying"
                if run.state != RunState.RUNNING:
                    return run.state
                rate, allowance = self._phase(run)
                if allowance == 0:
                    self._sleep_checking(SLICE)
                    continue
                # The limiter lets a 1 s window hold the rate plus one batch. Batches of at most a
                # twentieth of the current rate keep that at 105% and leave one batch of room for a
                # send that left late beside one on time (a busy host, a slow round trip), so every
                # second stays within 110% of plan (invariant 5), ramp steps included.
                size = min(run.plan.batch_size, max(1, int(rate // 20)))
                batch = self._next_batch(run, size if allowance < 0 else min(size, allowance))
                if not batch:
                    self.ledger.flush()  # the last batch's rows count only once recorded
                    if self._finished_publishing(run):
                        continue  # the loop's next read sees VERIFYING
                    if self.ordered and ordering.pause_if_blocked(run):
                        continue  # the loop's next read sees the pause
                    self._sleep_checking(SLICE)  # others hold leases; expired ones come back
                    continue
                self._prepare_targets(batch)
                try:
                    granted = limiter.wait_and_acquire(len(batch), rate, should_stop=self._stopping)
                except LimiterUnavailable as exc:
                    self._release(batch)  # nothing published without a token: wait for Redis
                    self._event(run, "limiter-unavailable", str(exc))
                    time.sleep(1)
                    continue
                if not granted:
                    self._release(batch)
                    continue
                if allowance < 0:  # no canary cap: lease the next batch while this one goes out
                    self.ahead = self.ledger.submit(self._claim, run, size)
                with telemetry.replay_batch(run, len(batch)):  # a span in the run's trace
                    self._publish(run, batch)
                self._maybe_check_stop_conditions(run)
                if time.monotonic() > deadline:
                    return self._continue_later()
        finally:
            try:
                self._release_ahead()
                self.ledger.close()  # a returning worker leaves every batch it published recorded
            finally:
                self._close_adapters()

    def _continue_later(self) -> str:
        """Jobs stay short: after WORKER_SECONDS the worker enqueues its successor and returns."""

        self._release_ahead()
        self.ledger.flush()
        with transaction.atomic():
            enqueue_worker(self.run_id, self.number)
        return "continued"

    def _close_adapters(self) -> None:
        try:
            for adapter in self.adapters.values():
                try:
                    adapter.close()
                except Exception:  # noqa: BLE001 - closing must not hide the loop's outcome
                    log.exception("closing an adapter failed")
        finally:
            try:
                self.redis.eval(_RELEASE_HEARTBEAT, 1, _heartbeat_key(self.run_id, self.number), self.owner)
            except redis.RedisError:
                log.warning("heartbeat not released (Redis unreachable); it expires by itself")

    def _event(self, run: ReplayRun, kind: str, message: str, **data: Any) -> None:
        RunEvent.objects.create(run=run, kind=kind, message=message[:1000], data=data)

    def _beat(self) -> None:
        try:
            self.redis.set(_heartbeat_key(self.run_id, self.number), self.owner, ex=HEARTBEAT_TTL)
        except redis.RedisError:
            log.warning("heartbeat not written (Redis unreachable)")

    def _stopping(self) -> bool:
        self._beat()
        state, control = ReplayRun.objects.filter(pk=self.run_id).values_list("state", "control").get()
        return control != "run" or state != RunState.RUNNING

    def _sleep_checking(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping():
            time.sleep(min(SLICE, max(end - time.monotonic(), 0)))

    # -- phases: canary, its window, ramp steps, full rate -------------------------------------

    def _phase(self, run: ReplayRun) -> tuple[float, int]:
        """(rate now, how many more rows may be claimed now; -1 = no cap, 0 = wait)."""
        plan = run.plan
        now = timezone.now()
        elapsed = (now - (run.phase_started_at or now)).total_seconds()
        if run.phase == breaker.PROBE_PHASE:  # issue 15: a circuit breaker's half-open probe
            return breaker.probe_phase(run)
        if run.phase == "canary":
            claimed = LedgerEntry.objects.filter(run=run, attempts__gt=0).count()
            if claimed < plan.canary_count:
                return float(plan.rate_per_second), plan.canary_count - claimed
            if LedgerEntry.objects.filter(LEASED_ROWS, run=run).exists():
                return 0.0, 0  # the canary's last batch is still out
            self._advance(run, "canary", "canary-window", f"canary of {claimed} published; watching")
            return 0.0, 0
        if run.phase == "canary-window":
            if elapsed < plan.canary_window_seconds:
                return 0.0, 0
            failures = self._canary_verification(run)
            if failures:
                reason = "canary verification failed: " + "; ".join(failures)
                if stop_run(run, reason=reason, action="pause"):
                    telemetry.stop_conditions_tripped(run, conditions=["canary_verification"], action="pause",
                                                      reason=reason)  # fmt: skip
                return 0.0, 0
            self._advance(run, "canary-window", "ramp-0", "canary verified; ramping up")
            return 0.0, 0
        steps = plan.ramp_steps or []
        if run.phase.startswith("ramp-"):
            index = int(run.phase.split("-", 1)[1])
            if index >= len(steps):
                self._advance(run, run.phase, "full", "full rate")
                return float(plan.rate_per_second), -1
            if elapsed >= plan.ramp_interval_seconds and index + 1 <= len(steps):
                following = f"ramp-{index + 1}" if index + 1 < len(steps) else "full"
                self._advance(run, run.phase, following, f"step {steps[index]}% healthy; next: {following}")
            return max(plan.rate_per_second * steps[index] / 100, 0.1), -1
        return float(plan.rate_per_second), -1

    def _advance(self, run: ReplayRun, current: str, following: str, message: str) -> None:
        with transaction.atomic():
            moved = ReplayRun.objects.filter(pk=run.pk, phase=current, state=RunState.RUNNING).update(
                phase=following, phase_started_at=timezone.now()
            )
            if moved:
                RunEvent.objects.create(run=run, kind="phase", message=message, data={"phase": following})

    def _canary_verification(self, run: ReplayRun) -> list[str]:
        failures = []
        for step in run.plan.verifications or []:
            result = run_verification_step(run, step)
            if not result.ok and not getattr(result, "pending", False):
                failures.append(f"{result.name}: {result.reason}")
        return failures

    # -- the ledger ----------------------------------------------------------------------------

    def _claim(self, run: ReplayRun, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` rows (pending ones, or leased ones whose lease expired) with a new
        fencing token each, and read what their messages are made of, in one statement. During the
        canary, claims are serialised per run so workers never overshoot its size."""
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CLAIM_PLAN)
            if run.phase in ("canary", breaker.PROBE_PHASE):
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [0x7265706C, run.pk])
                claimed = LedgerEntry.objects.filter(run=run, attempts__gt=0).count()
                cap = run.plan.canary_count if run.phase == "canary" else breaker.probe_cap(run)
                limit = min(limit, cap - claimed)
                if limit <= 0:
                    return []
            cursor.execute(_CLAIM_SQL, [run.pk, limit, self.owner, settings.RECOVERY_REPLAY_LEASE_SECONDS])
            rows = cursor.fetchall()
            discarded = [(row[0], row[3]) for row in rows if row[12] == DeadLetterState.DISCARDED]
            if discarded:  # never sent; in an ordered group, the rest of it waits behind (invariant 13)
                ordering.skip_discarded(cursor, self.owner, discarded)
                rows = [row for row in rows if row[12] != DeadLetterState.DISCARDED]
        # A batch's rows mostly share a target and often their headers or properties: each distinct
        # text is parsed once. The parsed dicts are shared, so they are read-only (messages.outgoing
        # copies what it sends).
        parsed: dict[Any, Any] = {}

        def load(raw: Any) -> Any:
            if raw not in parsed:
                parsed[raw] = _json(raw)
            return parsed[raw]

        return [
            Claimed(ledger_id, letter_id, item_id, token, load(target), replay_id,
                    messages.LetterContent(bytes(body or b""), load(headers), load(properties), content_type,
                                           source_message_id, identity))
            for (ledger_id, letter_id, item_id, token, target, replay_id, body, headers, properties, content_type,
                 source_message_id, identity, _letter_state) in rows
        ]  # fmt: skip

    def _release(self, batch: list[Claimed]) -> None:
        """Give rows back untouched (paused before publishing): only while they are still ours."""
        ids = [c.ledger_id for c in batch]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(BATCH_UPDATE_PLAN)
            cursor.execute(
                "UPDATE recovery_ledgerentry l SET lease_owner = '', lease_expires_at = NULL, "  # noqa: S608 - HELD_BY_OWNER is a constant
                "attempts = l.attempts - 1 FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, token) "
                f"WHERE {HELD_BY_OWNER}",
                [ids, [c.token for c in batch], ids, self.owner],
            )

    def _next_batch(self, run: ReplayRun, limit: int) -> list[Claimed]:
        """The batch claimed ahead, when it fits the current phase's size; else a fresh claim."""
        if self.ahead is None and not self.adapters:
            # A worker's first claim goes to the ledger thread while this one opens the target the
            # plan names, if it names one: they take about as long (for Kafka a producer and the
            # topic's metadata, ~60 ms, beside a claim of 5,000 rows). Held in self.ahead meanwhile,
            # so a worker that fails here still gives the claimed rows back (_release_ahead).
            self.ahead = self.ledger.submit(self._claim, run, limit)
            plan = run.plan
            if plan.target_broker_id and (plan.target_address or plan.target_routing_key):
                self._prepare_target(plan.target_broker_id, plan.target_address, plan.target_routing_key, "")
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            batch = ahead.result()
            if not batch and self.ordered:
                # Claimed ahead before the last batch was recorded, an ordered run's next letters
                # were still held behind it: once it is recorded they may go (invariant 13).
                self.ledger.flush()
            elif len(batch) <= limit:
                return batch
            else:
                self._release(batch)
        return self._claim(run, limit)

    def _release_ahead(self) -> None:
        """A stopping worker gives back the batch it claimed ahead: nothing of it was published."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            try:
                batch = ahead.result()
            except Exception:  # noqa: BLE001 - a failed claim leased nothing
                log.warning("claiming ahead failed", exc_info=True)
                return
            if batch:
                self._release(batch)

    def _finished_publishing(self, run: ReplayRun) -> bool:
        """No pending and no leased row left: move the run to verifying (once)."""
        open_rows = LedgerEntry.objects.filter(run=run, state=AttemptState.PENDING)  # leased rows included
        if open_rows.exists():
            return False
        with transaction.atomic():
            moved = ReplayRun.objects.filter(pk=run.pk, state=RunState.RUNNING).update(
                state=RunState.VERIFYING, phase="verify", phase_started_at=timezone.now()
            )
            if moved:
                RunEvent.objects.create(run=run, kind="phase", message="every letter published or failed; verifying")
        if moved:
            lifecycle.run_letters_replayed(run.pk)  # issue 15: after the last publish, in chunks (see there)
        return True

    # -- publishing ----------------------------------------------------------------------------

    def _adapter(self, broker_id: int) -> Any:
        if broker_id not in self.adapters:
            broker = Broker.objects.get(pk=broker_id)
            self.brokers[broker_id] = broker
            self.adapters[broker_id] = adapter_for(broker, timeout=10)
        return self.adapters[broker_id]

    def _prepare_targets(self, batch: list[Claimed]) -> None:
        """Connect to the batch's targets before taking its tokens (invariant 5). A worker's first
        batch would otherwise open its connection between the grant and the send, and a send that
        leaves that late beside another worker's on-time one crowds a second: at 10 msg/s two such
        first sends took a 1 s window to 120% of plan. A failure here is left to publishing, which
        reports it and backs off."""
        for broker_id, name, key, vhost in _by_target(batch):
            self._prepare_target(broker_id, name, key, vhost)

    def _prepare_target(self, broker_id: int, name: str, key: str, vhost: str) -> None:
        if (broker_id, name, vhost) in self.prepared:
            return
        try:
            self._adapter(broker_id).prepare_publish(as_target({"name": name, "routing_key": key, "vhost": vhost}))
        except RecoveryError:
            log.debug("preparing target %s of broker %s failed; publishing will report it", name, broker_id,
                      exc_info=True)  # fmt: skip
            return
        self.prepared.add((broker_id, name, vhost))

    def _publish(self, run: ReplayRun, batch: list[Claimed]) -> None:
        for (broker_id, name, key, vhost), group in _by_target(batch).items():
            target = as_target({"name": name, "routing_key": key, "vhost": vhost})
            try:
                adapter = self._adapter(broker_id)
                kind = self.brokers[broker_id].kind
                fifo = name.endswith(".fifo")
                sent_at = timezone.now()
                parent = telemetry.message_traceparent(run)  # the batch's span
                outgoing = [
                    messages.outgoing(c.letter, kind=kind, replay_id=c.replay_id, trace_id=run.trace_id, fifo=fifo,
                                      parent=parent)
                    for c in group
                ]  # fmt: skip
                results = adapter.publish(target, outgoing)
            except RecoveryError as exc:
                # The target is unreachable (connection lost, broker restarting): nothing was
                # confirmed. The rows go back untouched - an outage burns no attempt - and this
                # worker backs off before trying again, still obeying pause and abort.
                self._drop_adapter(broker_id)
                self._release(group)
                telemetry.replay_outcomes(broker=self._broker_name(broker_id), unsent=len(group))
                self.consecutive_failures += 1
                self._event(run, "target-unreachable", f"{len(group)} letter(s) not sent: {exc}",
                            failures=self.consecutive_failures)  # fmt: skip
                self._sleep_checking(min(2 ** min(self.consecutive_failures, 4) * 0.25, 5.0))
                continue
            fault_point("replay.after_publish")  # published, outcomes not recorded yet
            outcomes = [
                Outcome(c.ledger_id, c.token, r.confirmed, r.error, r.broker_message_id)
                for c, r in zip(group, results, strict=True)
            ]
            confirmed = sum(1 for o in outcomes if o.confirmed)
            telemetry.replay_outcomes(broker=self._broker_name(broker_id), published=confirmed,
                                      unconfirmed=len(outcomes) - confirmed)  # fmt: skip
            self._count_errors(run, outcomes)
            self.ledger.record(outcomes, sent_at)

    def _broker_name(self, broker_id: int) -> str:
        broker = self.brokers.get(broker_id)
        return broker.name if broker is not None else str(broker_id)

    def _drop_adapter(self, broker_id: int) -> None:
        self.prepared = {prepared for prepared in self.prepared if prepared[0] != broker_id}
        adapter = self.adapters.pop(broker_id, None)
        if adapter is not None:
            try:
                adapter.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                log.debug("closing a broken adapter failed", exc_info=True)

    def _count_errors(self, run: ReplayRun, outcomes: list[Outcome]) -> None:
        """Consecutive unconfirmed publishes feed the consecutive_failures stop condition through
        the run's publish-error events; a confirmed batch resets the count."""
        errors = [o.error for o in outcomes if not o.confirmed]
        if errors:
            self.consecutive_failures += len(errors)
            self._event(run, "publish-error", f"{len(errors)} of {len(outcomes)} not confirmed: {errors[0]}",
                        errors=len(errors), failures=self.consecutive_failures)  # fmt: skip
        else:
            self.consecutive_failures = 0

    # -- stop conditions and verification -----------------------------------------------------

    def _due(self, run: ReplayRun, what: str, *, seconds: float) -> bool:
        """True for one worker of the run every ``seconds`` (without Redis: for every worker)."""
        try:
            return bool(self.redis.set(f"recovery:replay:{run.pk}:{what}", self.owner, nx=True, px=int(seconds * 1000)))
        except redis.RedisError:
            return True

    def _maybe_check_stop_conditions(self, run: ReplayRun) -> None:
        if not self._due(run, "stopcheck", seconds=1):
            return
        tripped = [r for r in evaluate_stop_conditions(run) if not r.ok]
        if self._due(run, "preconditions", seconds=10):
            # Preconditions that make sense during a run (a closing time window, a failing health
            # check, a target filling up) pause it like a stop condition; overrides still hold. An
            # unreachable target is not among them: publishing retries with backoff, and the
            # consecutive_failures stop condition is the plan's say on how long to keep trying.
            tripped += failing_preconditions(run.plan, stage="run", only=RUN_STAGE_PRECONDITIONS)
        if tripped:
            action = "abort" if any(r.details.get("action") == "abort" for r in tripped) else "pause"
            reason = "; ".join(f"{r.name}: {r.reason}" for r in tripped)
            if stop_run(run, reason=reason, action=action):
                names = [r.name for r in tripped]
                telemetry.stop_conditions_tripped(run, conditions=names, action=action, reason=reason)

    def _verify(self, run: ReplayRun) -> str:
        """Worker 0 walks the verification steps (each may wait for its window) and ends the run."""
        steps = run.plan.verifications or []
        shown: list[tuple[str, str]] = []
        while True:
            results = [run_verification_step(run, step) for step in steps]
            if not any(getattr(r, "pending", False) for r in results):
                break
            shown = _show_progress(run, results, shown)
            self._beat()
            if ReplayRun.objects.filter(pk=run.pk).values_list("control", flat=True).get() != "run":
                return "stopped"
            time.sleep(SLICE * 5)
        evidence = _step_evidence(results)
        run.refresh_from_db()
        state, summary = evidence_outcome(run, results)  # issue 15: verified only with evidence
        finish_run(run, state=state, summary=summary, evidence=evidence)
        return state


def _show_progress(run: ReplayRun, results: list[Any], shown: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """While verifying, the run page shows what each step waits for (a window, a capture pass,
    the broker's signal) and until when: the steps' latest results are stored on the run when
    their wording changes; finish_run replaces them with the final evidence."""
    now = [(r.name, r.reason) for r in results]
    if now != shown:
        ReplayRun.objects.filter(pk=run.pk, state=RunState.VERIFYING).update(verification=_step_evidence(results))
    return now


def _step_evidence(results: list[Any]) -> list[dict[str, Any]]:
    """The steps' results as the run stores them (``pending`` only while a step still waits)."""
    return [
        {"step": r.name, "ok": r.ok, "reason": r.reason, "details": r.details}
        | ({"pending": True} if getattr(r, "pending", False) else {})
        for r in results
    ]


def _by_target(batch: list[Claimed]) -> dict[tuple[int, str, str, str], list[Claimed]]:
    """The batch's rows by (broker, target name, routing key, vhost), in claim order."""
    groups: dict[tuple[int, str, str, str], list[Claimed]] = defaultdict(list)
    for claimed in batch:
        target = claimed.target
        key = (target["broker"], target["name"], target.get("routing_key", ""), target.get("vhost", ""))
        groups[key].append(claimed)
    return groups


def stop_run(run: ReplayRun, *, reason: str, action: str) -> bool:
    """A stop condition tripped: pause (resumable) or stop for good. Only the first caller wins."""
    state = RunState.STOPPED if action == "abort" else RunState.PAUSED
    with transaction.atomic():
        moved = ReplayRun.objects.filter(pk=run.pk, state=RunState.RUNNING).update(
            state=state, control="abort" if action == "abort" else "pause", stop_reason=reason[:2000],
            finished_at=timezone.now() if action == "abort" else None,
        )  # fmt: skip
        if not moved:
            return False
        settled = None
        if action == "abort":
            ReplayPlan.objects.filter(pk=run.plan_id).update(state=PlanState.FINISHED)
            # issue 15: letters it never sent are open again (counted in the audit event)
            settled = lifecycle.run_letters_settled(run_id=run.pk, plan_id=run.plan_id, verified=False)
        else:
            lifecycle.run_letters_replayed(run.pk)  # what it sent reads replayed while it is paused
            breaker.breaker_opened(run, reason=reason)  # issue 15: the plan's circuit breaker, if any
        RunEvent.objects.create(run=run, kind="stop-condition", message=f"{action}: {reason}"[:1000],
                                data={"action": action})  # fmt: skip
        audit_record(actor="replay", action=AuditAction.RUN_STOPPED, obj=run,
                     summary=f"run {run.pk} {'stopped' if action == 'abort' else 'paused'} by a stop condition",
                     reason=reason[:2000], after=settled)  # fmt: skip
    return True


def finish_run(run: ReplayRun, *, state: str, summary: str, evidence: list[dict[str, Any]]) -> bool:
    with transaction.atomic():
        moved = ReplayRun.objects.filter(pk=run.pk, state=RunState.VERIFYING).update(
            state=state, finished_at=timezone.now(), verification=evidence, phase="done"
        )
        if not moved:
            return False
        ReplayPlan.objects.filter(pk=run.plan_id).update(state=PlanState.FINISHED)
        settle_ledger(run, state=state)  # issue 15: the one place ledger rows become verified
        # issue 15 letter lifecycle: verified -> letters resolved; letters never sent -> open again
        settled = lifecycle.run_letters_settled(run_id=run.pk, plan_id=run.plan_id, verified=state == RunState.VERIFIED)
        RunEvent.objects.create(run=run, kind="finished", message=f"{state}: {summary}"[:1000])
        audit_record(
            actor="replay",
            action=AuditAction.RUN_FINISHED,
            obj=run,
            summary=f"run {run.pk} ended {state}: {summary}"[:500],
            after={"state": state, "published": run.published, "failed": run.failed, "evidence": evidence, **settled},
        )
    return True
