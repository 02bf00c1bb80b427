"""Order of replayed letters (invariant 13): SQS FIFO message groups and Kafka keys.

Which letters are ordered, and where each stands:

- **SQS FIFO**: letters with a ``MessageGroupId`` from one DLQ form a group, in the DLQ's order
  (their ``SequenceNumber``; capture order where the endpoint gives none).
- **Kafka**: letters with a key (not null) from one source partition form a group, in offset
  order. The source is the partition the DLT writer recorded (Spring ``kafka_dlt-original-*``,
  Connect ``__connect.errors.*``, ``x-original-*``: failure_extras ``original_*``), else the DLQ
  topic's own partition and offset.
- Everything else (RabbitMQ, SQS standard queues, Kafka records without a key) has no group:
  its items are frozen in capture order, and one worker keeps that order (documented, not enforced).

The freeze ranks a group's letters 1, 2, ... over all the plan's items, excluded ones included,
so an excluded letter keeps its place and holds the letters after it.

How the engine keeps it: a ledger row of an ordered group is claimable only once the row before
it was published. ``hold_successors`` gives every row after the first of its group the
ORDER_HELD lease, which never expires, so the engine's claim passes it by exactly as it passes a
row another worker holds (the claim's statement stays the same, and so does its cost);
``unlock_successors`` lifts the hold of the next row in the transaction that records a row
published. One group therefore has at most one row out at a time, across workers and batches.

A row that cannot be sent (failed after its attempts, skipped because its letter was discarded,
or missing because its item was excluded) never unlocks the next: the rest of its group waits
"blocked behind letter N". When nothing else is left to send, ``pause_if_blocked`` pauses the run
with that reason; ``blocked_groups`` lists them for the run page; releasing one is an audited
service (recovery.replay.services.run_release_blocked) that lifts the hold of the first waiting row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from recovery.audit.services import audit_record
from recovery.models import (
    ORDER_HELD,
    AttemptState,
    AuditAction,
    BrokerKind,
    LedgerEntry,
    PlanItem,
    PlanItemState,
    ReplayPlan,
    ReplayRun,
    RunEvent,
    RunState,
)

HELD_UNTIL = "9999-01-01T00:00:00+00:00"  # the ORDER_HELD lease: never expires, still a datetime Python reads
SQS_FIFO, KAFKA_KEY = "sqs-fifo", "kafka-key"
BLOCKED_REASON = "ordered groups blocked"  # how a run paused by pause_if_blocked says why (its stop reason)

_DIGITS = "'^[0-9]{1,38}$'"


def _number(expression: str) -> str:
    return f"(CASE WHEN ({expression}) ~ {_DIGITS} THEN ({expression})::numeric END)"


_KAFKA_ORIGINAL = (
    "(coalesce(dl.failure_extras->>'original_topic', '') <> '' "
    f"AND coalesce(dl.failure_extras->>'original_partition', '') ~ {_DIGITS} "
    f"AND coalesce(dl.failure_extras->>'original_offset', '') ~ {_DIGITS})"
)

# The group and the place in the DLQ of a letter ``dl`` of broker ``b`` and DLQ ``l.dlq_id``:
# SQL select-list items naming ``grp`` ('' = not ordered) and ``seq`` (a number, or NULL).
GROUP_AND_SEQUENCE = f"""
CASE
  WHEN b.kind = 'sqs' AND coalesce(dl.properties->>'MessageGroupId', '') <> ''
    THEN '{SQS_FIFO}:' || md5(dl.dlq_id::text || ':' || (dl.properties->>'MessageGroupId'))
  WHEN b.kind = 'kafka' AND coalesce(jsonb_typeof(dl.properties->'key'), 'null') <> 'null'
    THEN '{KAFKA_KEY}:' || md5(CASE WHEN {_KAFKA_ORIGINAL}
      THEN (dl.failure_extras->>'original_topic') || ':' || (dl.failure_extras->>'original_partition')
      ELSE coalesce(dl.properties->>'topic', '') || ':' || coalesce(dl.properties->>'partition', '') END
      || ':' || (dl.properties->'key')::text)
  ELSE ''
END AS grp,
CASE
  WHEN b.kind = 'sqs' THEN {_number("dl.properties->>'SequenceNumber'")}
  WHEN b.kind = 'kafka' THEN CASE WHEN {_KAFKA_ORIGINAL} THEN (dl.failure_extras->>'original_offset')::numeric
                                  ELSE {_number("dl.properties->>'offset'")} END
END AS seq
"""

# Joined to a selection ``l`` of letters (with ``id``): the letter's group (``o.grp``) and place (``o.seq``).
ORDERING_JOIN = f"""
JOIN recovery_deadletter dl ON dl.id = l.id
JOIN recovery_deadletterqueue q ON q.id = dl.dlq_id
JOIN recovery_broker b ON b.id = q.broker_id
CROSS JOIN LATERAL (SELECT {GROUP_AND_SEQUENCE}) AS o
"""
# The item's rank in its group (NULL outside a group), and the order items are frozen in: the
# DLQ's order, so that ledger ids (the claim's order) follow it too.
POSITION = "CASE WHEN o.grp = '' THEN NULL ELSE row_number() OVER (PARTITION BY o.grp ORDER BY o.seq, l.id) END"
FREEZE_ORDER = "ORDER BY l.dlq_id, o.seq, l.id"


# -- the engine ---------------------------------------------------------------------------------


def is_ordered(plan_id: int) -> bool:
    """True when some group of the plan has more than one letter: only then must its rows wait."""
    return PlanItem.objects.filter(plan_id=plan_id, ordering_position__gt=1).exclude(ordering_group="").exists()


def hold_successors(run: ReplayRun) -> int:
    """At the start of a run (in its transaction): every row after the first of its group waits
    for the one before it. Returns how many rows are held.

    The rows are found from the plan's items (an array of item ids, then the ledger's item index),
    never by joining the ledger just written: its statistics still say empty inside the start's
    transaction, and a join planned on them once took 40 s for 20,000 rows (make bench)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE recovery_ledgerentry l SET lease_owner = %s, lease_expires_at = %s "
            "WHERE l.item_id = ANY(ARRAY(SELECT id FROM recovery_planitem WHERE plan_id = %s "
            "AND ordering_group <> '' AND ordering_position > 1)) AND l.run_id = %s AND l.state = 'pending'",
            [ORDER_HELD, HELD_UNTIL, run.plan_id, run.pk],
        )
        return cursor.rowcount


# The held rows that follow rows just published in their group (parameters: the published ids,
# the run, ORDER_HELD).
UNLOCK_NEXT_SQL = (
    "UPDATE recovery_ledgerentry n SET lease_owner = '', lease_expires_at = NULL "
    "FROM recovery_ledgerentry l JOIN recovery_planitem i ON i.id = l.item_id "
    "JOIN recovery_planitem ni ON ni.plan_id = i.plan_id AND ni.ordering_group = i.ordering_group "
    "AND ni.ordering_position = i.ordering_position + 1 AND ni.ordering_group <> '' "
    "WHERE l.id = ANY(%s::bigint[]) AND l.state = 'published' AND i.ordering_group <> '' "
    "AND n.run_id = %s AND n.letter_id = ni.letter_id AND n.state = 'pending' AND n.lease_owner = %s"
)


def unlock_successors(cursor: Any, run_id: int, published_ids: list[int]) -> int:
    """Inside the transaction that records ``published_ids`` published: the next row of each of
    their groups may go now. Primary-key and index lookups per row (the caller runs it with
    nested loops only, as a claim: a hash join would read the whole run's ledger each batch)."""
    cursor.execute(UNLOCK_NEXT_SQL, [published_ids, run_id, ORDER_HELD])
    return cursor.rowcount


def skip_discarded(cursor: Any, owner: str, rows: list[tuple[int, int]]) -> int:
    """Claimed rows (id, token) whose letter was discarded after the plan was frozen are not sent:
    they become skipped, and the rest of their group (if any) stays held behind them."""
    ids = [ledger_id for ledger_id, _token in rows]
    cursor.execute(
        "UPDATE recovery_ledgerentry l SET state = %s, lease_owner = '', lease_expires_at = NULL, "
        "error = 'its letter was discarded after the plan was frozen: not sent' "
        "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, token) "
        "WHERE l.id = ANY(%s::bigint[]) AND l.id = v.id AND l.state = 'pending' AND l.lease_owner = %s "
        "AND l.fencing_token = v.token",
        [AttemptState.SKIPPED, ids, [token for _id, token in rows], ids, owner],
    )
    return cursor.rowcount


def pause_if_blocked(run: ReplayRun) -> bool:
    """Nothing left to send but held rows: pause the run, saying which letters hold which groups.
    One snapshot decides: no row out with a worker and none free to claim, so no recording can
    unlock anything any more. Only the first caller pauses (conditional UPDATE)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE lease_owner = %s), count(*) FILTER (WHERE lease_owner <> %s) "
            "FROM recovery_ledgerentry WHERE run_id = %s AND state = 'pending'",
            [ORDER_HELD, ORDER_HELD, run.pk],
        )
        held, other = cursor.fetchone()
    if other or not held:
        return False
    groups = blocked_groups(run)
    if not groups:
        return False
    reason = f"{BLOCKED_REASON}: " + "; ".join(g.sentence() for g in groups[:5])
    if len(groups) > 5:
        reason += f"; and {len(groups) - 5} more group(s)"
    reason += ". Release them or abort the run."
    with transaction.atomic():
        moved = ReplayRun.objects.filter(pk=run.pk, state=RunState.RUNNING).update(
            state=RunState.PAUSED, control="pause", stop_reason=reason[:2000]
        )
        if not moved:
            return False
        RunEvent.objects.create(run=run, kind="blocked", message=reason[:1000],
                                data={"groups": [g.group for g in groups], "held": held})  # fmt: skip
        audit_record(actor="replay", action=AuditAction.RUN_ORDER_BLOCKED, obj=run,
                     summary=f"run {run.pk} paused: {held} letter(s) held behind {len(groups)} blocked group(s)",
                     after={"blocked": [g.as_dict() for g in groups[:100]]}, reason=reason[:2000])  # fmt: skip
    return True


# -- reads for the run and plan pages ------------------------------------------------------------


@dataclass(frozen=True)
class BlockedGroup:
    """An ordered group of a run whose next letter waits behind one that cannot be sent."""

    group: str
    waiting: int  # held rows of the group
    first_waiting_id: int  # the ledger row a release lets go
    blocker_letter_id: int
    blocker_position: int
    why: str

    @property
    def kind(self) -> str:
        return SQS_FIFO if self.group.startswith(SQS_FIFO) else KAFKA_KEY

    def sentence(self) -> str:
        return f"{self.waiting} letter(s) blocked behind letter {self.blocker_letter_id} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "waiting": self.waiting, "blocker_letter": self.blocker_letter_id,
                "position": self.blocker_position, "why": self.why}  # fmt: skip


_BLOCKED = """
WITH held AS (
    SELECT i.ordering_group AS grp, i.ordering_position AS pos, l.id,
           count(*) OVER (PARTITION BY i.ordering_group) AS waiting,
           row_number() OVER (PARTITION BY i.ordering_group ORDER BY i.ordering_position) AS n
    FROM recovery_ledgerentry l JOIN recovery_planitem i ON i.id = l.item_id
    WHERE l.run_id = %s AND l.state = 'pending' AND l.lease_owner = %s
)
SELECT h.grp, h.waiting, h.id, b.letter_id, b.ordering_position, b.state, b.exclusion, p.state, p.error
FROM held h
JOIN recovery_planitem b ON b.plan_id = %s AND b.ordering_group = h.grp AND b.ordering_position = h.pos - 1
 AND b.ordering_group <> ''
LEFT JOIN recovery_ledgerentry p ON p.run_id = %s AND p.letter_id = b.letter_id
WHERE h.n = 1 AND (p.id IS NULL OR p.state IN ('failed', 'skipped'))
ORDER BY b.letter_id
"""


def blocked_groups(run: ReplayRun, *, group: str | None = None) -> list[BlockedGroup]:
    """The run's ordered groups held behind a letter that failed, was skipped or was excluded
    (a group merely waiting for its letter in flight is not blocked)."""
    with connection.cursor() as cursor:
        cursor.execute(_BLOCKED, [run.pk, ORDER_HELD, run.plan_id, run.pk])
        rows = cursor.fetchall()
    found = []
    for grp, waiting, first_id, letter_id, position, item_state, exclusion, ledger_state, error in rows:
        if group is not None and grp != group:
            continue
        if ledger_state is None:
            why = f"excluded from the plan: {exclusion}" if item_state == PlanItemState.EXCLUDED else "not in this run"
        elif ledger_state == AttemptState.SKIPPED:
            why = "discarded after the plan was frozen"
        else:
            why = f"failed: {(error or 'not confirmed')[:200]}"
        found.append(BlockedGroup(grp, waiting, first_id, letter_id, position, why))
    return found


def release(run: ReplayRun, groups: list[BlockedGroup]) -> int:
    """Lift the hold of each group's first waiting row (inside the caller's transaction): the
    group goes on without its blocker. Returns the rows let go."""
    ids = [g.first_waiting_id for g in groups]
    held = LedgerEntry.objects.filter(pk__in=ids, run=run, state=AttemptState.PENDING, lease_owner=ORDER_HELD)
    return held.update(lease_owner="", lease_expires_at=None) if ids else 0


@dataclass(frozen=True)
class Guarantee:
    """What order a plan keeps, in words, for its page (the approver reads it before approving)."""

    lines: list[str]
    groups: int
    held_at_freeze: int


def plan_guarantee(plan: ReplayPlan) -> Guarantee:
    """From the frozen items when there are any, else from the draft's selection."""
    frozen = PlanItem.objects.filter(plan=plan).exists()
    counts = _frozen_counts(plan) if frozen else _selection_counts(plan)
    lines = []
    for kind, (groups, letters) in sorted(counts.items()):
        one_at_a_time = "one letter of a group at a time, whatever the number of workers."
        if kind == SQS_FIFO:
            lines.append(f"SQS FIFO: {letters:,} letter(s) in {groups:,} message group(s) go out in their DLQ order "
                         f"(SequenceNumber), {one_at_a_time}")  # fmt: skip
        elif kind == KAFKA_KEY:
            lines.append(f"Kafka: {letters:,} keyed letter(s) in {groups:,} (key, source partition) group(s) go out "
                         f"in offset order, {one_at_a_time}")  # fmt: skip
    kinds = _source_kinds(plan)
    if BrokerKind.RABBITMQ in kinds:
        lines.append(
            "RabbitMQ: letters go out in capture order (queue order) with 1 worker"
            + (" (this plan's setting)." if plan.workers == 1 else f"; this plan has {plan.workers} workers, so their "
               "order is not kept.")
            + " A letter retried after a refusal goes after the ones behind it."
        )  # fmt: skip
    if not counts and BrokerKind.RABBITMQ not in kinds:
        lines.append("No ordering guarantee: none of these letters is in an SQS FIFO message group or has a Kafka key.")
    held = _held_at_freeze(plan) if frozen else 0
    if held:
        lines.append(f"{held:,} letter(s) follow an excluded letter of their group: they wait behind it until "
                     "someone releases them on the run page.")  # fmt: skip
    return Guarantee(lines, sum(g for g, _n in counts.values()), held)


def _frozen_counts(plan: ReplayPlan) -> dict[str, tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT split_part(ordering_group, ':', 1), count(DISTINCT ordering_group), count(*) "
            "FROM recovery_planitem WHERE plan_id = %s AND ordering_group <> '' AND state = %s GROUP BY 1",
            [plan.pk, PlanItemState.INCLUDED],
        )
        return {kind: (groups, letters) for kind, groups, letters in cursor.fetchall()}


def _selection_counts(plan: ReplayPlan) -> dict[str, tuple[int, int]]:
    from recovery.replay.freeze import selection_sql

    sql, params = selection_sql(plan)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT split_part(o.grp, ':', 1), count(DISTINCT o.grp), count(*) FROM ({sql}) AS l {ORDERING_JOIN} "  # noqa: S608 - built from constants and the ORM's own SQL
            "WHERE o.grp <> '' GROUP BY 1",
            params,
        )
        return {kind: (groups, letters) for kind, groups, letters in cursor.fetchall()}


def _source_kinds(plan: ReplayPlan) -> set[str]:
    from recovery.replay.freeze import selection_sql

    sql, params = selection_sql(plan)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT b.kind FROM ({sql}) AS l JOIN recovery_deadletterqueue q ON q.id = l.dlq_id "  # noqa: S608 - as above
            "JOIN recovery_broker b ON b.id = q.broker_id",
            params,
        )
        return {kind for (kind,) in cursor.fetchall()}


def _held_at_freeze(plan: ReplayPlan) -> int:
    """Included letters of a group with an excluded letter before them: they wait behind it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM recovery_planitem i WHERE i.plan_id = %s AND i.state = %s AND i.ordering_group <> '' "
            "AND EXISTS (SELECT 1 FROM recovery_planitem e WHERE e.plan_id = i.plan_id AND e.ordering_group <> '' "
            "AND e.ordering_group = i.ordering_group AND e.ordering_position < i.ordering_position AND e.state = %s)",
            [plan.pk, PlanItemState.INCLUDED, PlanItemState.EXCLUDED],
        )
        (count,) = cursor.fetchone()
    return count
