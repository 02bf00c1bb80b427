"""The ledger's writes on a thread of their own: recording a batch's publish outcomes, and
claiming the next batch ahead.

Before a worker publishes batch N it hands the ledger thread the claim of batch N + 1, and after
it, batch N's outcomes: PostgreSQL records batch N - 1 and leases batch N + 1 while the broker
takes batch N. What this must not weaken:

- Invariant 4 (at most one owner): every outcome is written only while the row is still leased to
  this worker with the token it claimed it with; the UPDATE's row count is what counts.
- Invariant 6 (stop fast, at most one batch in flight): at most one batch waits to be recorded.
  The worker waits for it (``flush``) before it hands over another, decides the run has finished
  or returns, so a paused worker leaves every batch it published recorded. A batch claimed ahead
  is not in flight: nothing of it was published, and a worker that stops releases it untouched.
- Nothing is recorded that was not confirmed (invariant 2): the outcomes come from the adapter.

If recording fails (PostgreSQL unreachable), the error is raised in the worker at its next hand-over
or flush; the rows stay leased, their leases expire and they are published again with the same
x-replay-id, exactly as when a worker dies between publishing and recording.

A worker called inside a database transaction (a test driving the engine inside its transaction)
does this work inline: another connection could not see the rows that transaction holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import F

from recovery.faults import fault_point
from recovery.models import ReplayRun
from recovery.replay import ordering

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ATTEMPTS = 3  # publish attempts per letter before its ledger row is failed

# A batch UPDATE's rows: those of the batch (``v``, unnested arrays of ids and tokens; the ids once
# more as the last-but-one parameter) still leased to ``owner`` (the last parameter) under the token
# it claimed them with (invariant 4). A leased row is pending with a lease (see LedgerEntry).
HELD_BY_OWNER = (
    "l.id = ANY(%s::bigint[]) AND l.id = v.id AND l.state = 'pending' AND l.lease_owner = %s "
    "AND l.fencing_token = v.token"
)

# The ledger's statistics are nearly always stale: a run inserts its rows and moves them through
# their states within seconds, so the planner's guess at "rows of run R in state S held by W" swings
# between none and all of them. A wrong guess turns a batch's 1,000 primary-key lookups into a scan
# of the run, or into 1,000 of them (measured: a 10 ms batch update took 140 ms after an ANALYZE).
# These settings, local to the batch's transaction, leave only the plans whose cost grows with the
# batch: for a claim, the run's pending rows in (run, state, id) order up to the batch's size, then
# nested loops over primary keys; for an update of listed rows, a hash join of the list with the
# rows found by primary key. Each names every setting the other changes, so the two
# can share a transaction (a test driving the engine inside its own); no JIT, as a disabled plan
# node's cost penalty would otherwise trigger compiling the statement.
_PLANNER_SETTINGS = (
    "enable_seqscan", "enable_bitmapscan", "enable_nestloop", "enable_hashjoin", "enable_mergejoin", "jit",
)  # fmt: skip


def _planner(*enabled: str) -> str:
    return "; ".join(f"SET LOCAL {name} = {'on' if name in enabled else 'off'}" for name in _PLANNER_SETTINGS)


CLAIM_PLAN = _planner("enable_nestloop")
BATCH_UPDATE_PLAN = _planner("enable_bitmapscan", "enable_hashjoin", "enable_mergejoin")


@dataclass(frozen=True)
class Outcome:
    ledger_id: int
    token: int
    confirmed: bool
    error: str
    broker_message_id: str


def record_outcomes(
    run_id: int, owner: str, outcomes: list[Outcome], sent_at: datetime, ordered: bool = False
) -> tuple[int, int]:
    """Write a batch's outcomes while ``owner`` still holds each row's token (invariant 4):
    confirmed rows become published, stamped with when the batch went to the broker (``sent_at``:
    the moment the target took the load, which is what the rate plan and the FIFO deduplication
    window are about; the broker's confirmation is what the state says); an unconfirmed row goes
    back to pending, or is failed after MAX_ATTEMPTS. Returns (published, failed) as the row counts
    say; the run's counters move by as much in the same transaction. In an ``ordered`` run the next
    row of each published row's group is let go in the same transaction (invariant 13)."""
    confirmed = [o for o in outcomes if o.confirmed]
    refused = [o for o in outcomes if not o.confirmed]
    published = failed = resent = 0
    fault_point("replay.recording")  # on the ledger thread, while the worker publishes the next batch
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(BATCH_UPDATE_PLAN)
        if confirmed:
            ids = [o.ledger_id for o in confirmed]
            cursor.execute(
                "WITH u AS (UPDATE recovery_ledgerentry l SET state = 'published', published_at = %s, "  # noqa: S608 - HELD_BY_OWNER is a constant
                "broker_message_id = v.message_id, error = '' "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, token, message_id) "
                f"WHERE {HELD_BY_OWNER} RETURNING l.resent) "
                "SELECT count(*), count(*) FILTER (WHERE resent) FROM u",  # re-sent: after a lost worker (issue 15)
                [sent_at, ids, [o.token for o in confirmed], [o.broker_message_id[:300] for o in confirmed], ids,
                 owner],
            )  # fmt: skip
            published, resent = cursor.fetchone()
            if ordered and published:
                cursor.execute(CLAIM_PLAN)
                ordering.unlock_successors(cursor, run_id, ids)
                cursor.execute(BATCH_UPDATE_PLAN)
        if refused:
            ids = [o.ledger_id for o in refused]
            cursor.execute(
                "UPDATE recovery_ledgerentry l SET "  # noqa: S608 - HELD_BY_OWNER is a constant
                "state = CASE WHEN l.attempts >= %s THEN 'failed' ELSE 'pending' END, "
                "lease_owner = CASE WHEN l.attempts >= %s THEN l.lease_owner ELSE '' END, "
                "lease_expires_at = CASE WHEN l.attempts >= %s THEN l.lease_expires_at END, error = v.error "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS v(id, token, error) "
                f"WHERE {HELD_BY_OWNER} RETURNING l.state",
                [MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS, ids, [o.token for o in refused],
                 [o.error[:2000] for o in refused], ids, owner],
            )  # fmt: skip
            failed = sum(1 for (state,) in cursor.fetchall() if state == "failed")
        if published or failed:
            counters = {"published": F("published") + published, "failed": F("failed") + failed,
                        "resent": F("resent") + resent}  # fmt: skip
            ReplayRun.objects.filter(pk=run_id).update(**counters)
    return published, failed


class LedgerThread:
    """The worker's second database connection: it records batch N and claims batch N + 2 while
    the worker publishes batch N + 1 (see the module docstring). Work runs in submission order;
    at most one recording is outstanding."""

    def __init__(self, run_id: int, owner: str, *, ordered: bool = False) -> None:
        self.run_id = run_id
        self.owner = owner
        self.ordered = ordered
        self._executor: ThreadPoolExecutor | None = None
        if not connection.in_atomic_block:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replay-ledger-{run_id}")
        self._recording: Future[tuple[int, int]] | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn`` on the ledger connection (inline when the worker runs inside a transaction)."""
        if self._executor is not None:
            return self._executor.submit(_on_own_connection, fn, *args)
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - raised where the result is read
            done.set_exception(exc)
        return done

    def record(self, outcomes: list[Outcome], sent_at: datetime) -> None:
        """Hand over a published batch's outcomes, after the previous batch is recorded."""
        self.flush()
        self._recording = self.submit(record_outcomes, self.run_id, self.owner, outcomes, sent_at, self.ordered)

    def flush(self) -> None:
        """Wait until the handed-over batch is recorded; raise what recording raised."""
        recording, self._recording = self._recording, None
        if recording is not None:
            recording.result()

    def close(self) -> None:
        """Record what is pending and stop the thread (raises what recording raised)."""
        try:
            self.flush()
        finally:
            if self._executor is not None:
                self._executor.submit(_close_connection)
                self._executor.shutdown(wait=True)
                self._executor = None


def _close_connection() -> None:
    connection.close()  # the ledger thread's own connection (the proxy resolves per thread)


def _on_own_connection(fn: Callable[..., T], *args: Any) -> T:
    """Run on the ledger thread; a broken connection is dropped so the next call opens a new one."""
    try:
        return fn(*args)
    except Exception:
        connection.close_if_unusable_or_obsolete()
        raise
