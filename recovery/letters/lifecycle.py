"""Letter lifecycle transitions (issue 15 part 1; docs/replay.md "Letter lifecycle").

    captured (open) -> held / discarded               triage (recovery.triage.services)
    captured / held -> planned ("in a plan")          plan submitted (recovery.replay.services)
    planned / replaying -> replayed                   its publish confirmed, written when the run
                                                      verifies, pauses or ends (run_letters_replayed)
    replayed -> resolved                              its replay verified (the run, or its ledger row)
    planned / replaying / replayed / resolved         it came back to a DLQ (recovery.classification)
      -> returned
    planned / replaying -> the state before the plan  the plan or run ended without sending it

Every function here runs inside the transaction of the service that causes the move and is
set-based (one or two statements, whatever the number of letters; run_letters_replayed one per
chunk of REPLAYED_CHUNK letters). Each change writes one audit
event (invariant 8): the moves of a service that audits itself (plan submit, change, reject,
cancel; run start, abort, stop, finish) are counted in that service's event; the moves nothing
else audits (a recorded batch of publishes, a batch of returned letters, rows verified later)
write one event per batch and kind of move, in the same transaction.

Lock order, where the replay engine and classification meet: ledger rows, then the run's row,
then letters, then the audit chain (a batch's recording and a batch of returned letters once
deadlocked in the other order).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, transaction
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.models import ALREADY_REPLAYED_STATES, AuditAction, DeadLetterState, PlanItemState, ReplayPlan

S = DeadLetterState
_REPLAYED = [s.value for s in ALREADY_REPLAYED_STATES]
_SENDING = [S.PLANNED.value, S.REPLAYING.value]
EXAMPLES = 100  # letter ids an audit event lists


def _execute(sql: str, params: Sequence[object]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# -- triage --------------------------------------------------------------------------------------


def letters_held(letter_ids: Sequence[int]) -> int:
    """Triage held these letters: open ones become held (they leave the open-work lists)."""
    return _execute(
        "UPDATE recovery_deadletter SET state = %s, state_changed_at = %s WHERE id = ANY(%s) AND state = %s",
        [S.HELD, timezone.now(), list(letter_ids), S.CAPTURED],
    )


def letters_unheld(letter_ids: Sequence[int]) -> int:
    """Triage gave held letters another disposition: they are open work again."""
    return _execute(
        "UPDATE recovery_deadletter SET state = %s, state_changed_at = %s WHERE id = ANY(%s) AND state = %s",
        [S.CAPTURED, timezone.now(), list(letter_ids), S.HELD],
    )


# -- plans -----------------------------------------------------------------------------------------


def letters_planned(plan: ReplayPlan) -> dict[str, int]:
    """On submit: the letters of the plan's included items are "in a plan"; each remembers the
    state it had, to go back to if the plan never sends it. Items whose letter an earlier plan
    replayed are flagged ``replay_again`` (the plan page shows them to the approver). Returns the
    counts for the submit's audit event."""
    again = _execute(
        "UPDATE recovery_planitem i SET replay_again = true FROM recovery_deadletter d "
        "WHERE i.plan_id = %s AND i.state = %s AND d.id = i.letter_id AND d.state = ANY(%s)",
        [plan.pk, PlanItemState.INCLUDED, _REPLAYED],
    )
    planned = _execute(
        "UPDATE recovery_deadletter d SET state_before_plan = d.state, state = %s, state_changed_at = %s "
        "FROM recovery_planitem i WHERE i.plan_id = %s AND i.state = %s AND d.id = i.letter_id "
        "AND d.state <> ALL(%s)",
        [S.PLANNED, timezone.now(), plan.pk, PlanItemState.INCLUDED, [*_SENDING, S.DISCARDED.value]],
    )
    return {"letters_planned": planned, "letters_replayed_before": again}


def letters_unplanned(plan_id: int) -> int:
    """The plan lets go of letters it has not sent (its items thawed by a change, the plan
    rejected or cancelled, its run ended): each goes back to the state it had before the plan.
    Letters the plan published are replayed already and stay so."""
    return _execute(
        "UPDATE recovery_deadletter d SET state = coalesce(nullif(d.state_before_plan, ''), %s), "
        "state_before_plan = '', state_changed_at = %s FROM recovery_planitem i "
        "WHERE i.plan_id = %s AND i.state = %s AND d.id = i.letter_id AND d.state = ANY(%s)",
        [S.CAPTURED, timezone.now(), plan_id, PlanItemState.INCLUDED, _SENDING],
    )


# -- runs ------------------------------------------------------------------------------------------


REPLAYED_CHUNK = 5_000  # letters per statement and transaction when a run's letters become replayed


def run_letters_replayed(run_id: int) -> int:
    """The letters whose publish this run confirmed (ledger rows published) are replayed. A letter
    replayed, resolved or returned already stays as it is. Called once per step of the run that
    an operator reads: when it moves to verifying (outside that transaction), when it pauses, and
    before it settles (abort, stop, finish: letters_unplanned must not take a published letter
    back to open). While the run sends, its letters stay "in a plan" and its ledger shows each.

    Why not per recorded batch: the update of a letter is not HOT (``state`` is in partial index
    predicates) and touches every index of the wide row, search trigrams included: 70 to 90 us a
    letter, which on the ledger thread cut one-worker Kafka replay from about 16,500 to 4,000
    msg/s (make bench, 2026-12-08). After the last publish it costs the same but no longer slows
    what the target receives. For the same reason starting a run no longer writes "replaying" to
    each letter (a pass over every letter before the first publish); the state remains for
    letters of runs started before that. In chunks of REPLAYED_CHUNK letters by ledger order,
    each with its own audit event in its transaction (savepoints inside a caller's transaction),
    so a large run holds no long transaction; a chunk lost to a crash is redone by the run's
    settling."""
    total, after = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT max(id), array_agg(letter_id) FROM (SELECT id, letter_id FROM recovery_ledgerentry "
                "WHERE run_id = %s AND state IN ('published', 'verified') AND id > %s ORDER BY id LIMIT %s) AS c",
                [run_id, after, REPLAYED_CHUNK],
            )
            last, letter_ids = cursor.fetchone()
            if last is None:
                return total
            cursor.execute(
                "UPDATE recovery_deadletter SET state = %s, state_before_plan = '', state_changed_at = %s "
                "WHERE id = ANY(%s::bigint[]) AND state <> ALL(%s)",
                [S.REPLAYED, timezone.now(), letter_ids, _REPLAYED],
            )
            letters = cursor.rowcount
            if letters:
                audit_record(
                    actor="replay", action=AuditAction.LETTERS_REPLAYED, object_type="recovery.replayrun",
                    object_id=str(run_id), summary=f"{letters} letter(s) of run {run_id} replayed (publish confirmed)",
                    after={"run": run_id, "letters": letters},
                )  # fmt: skip
        total, after = total + letters, last


def letters_resolved(run_id: int, *, run_verified: bool = False, audit: bool = True) -> int:
    """Letters whose replay was verified are resolved (invariant 12): those whose ledger row in
    this run is verified, and with ``run_verified`` (the run ended verified) every letter it
    published. One audit event, unless the caller's own event counts them (``audit=False``).

    Integration point (issue 15 part 3): whatever marks ledger rows verified, with evidence and
    possibly after the run ended, calls this in the same transaction."""
    rows = "state IN ('published', 'verified')" if run_verified else "state = 'verified'"
    letters = _execute(
        "UPDATE recovery_deadletter SET state = %s, state_changed_at = %s WHERE id = ANY(ARRAY("  # noqa: S608 - constant
        f"SELECT letter_id FROM recovery_ledgerentry WHERE run_id = %s AND {rows})) AND state = %s",
        [S.RESOLVED, timezone.now(), run_id, S.REPLAYED],
    )
    if letters and audit:
        audit_record(
            actor="replay", action=AuditAction.LETTERS_RESOLVED, object_type="recovery.replayrun",
            object_id=str(run_id), summary=f"{letters} letter(s) of run {run_id} resolved: their replay was verified",
            after={"run": run_id, "letters": letters},
        )  # fmt: skip
    return letters


def run_letters_settled(*, run_id: int, plan_id: int, verified: bool) -> dict[str, int]:
    """A run ended (finished, aborted, stopped for good). Verified: the letters it published are
    resolved. Letters it never sent go back to the state they had before the plan. Returns the
    counts for the audit event of the service that ended the run (one event per change)."""
    run_letters_replayed(run_id)  # before the release: a published letter stays replayed
    resolved = letters_resolved(run_id, run_verified=True, audit=False) if verified else 0
    return {"letters_resolved": resolved, "letters_released": letters_unplanned(plan_id)}


# -- returns ---------------------------------------------------------------------------------------

_RETURNS = (
    "SELECT d.id, i.letter_id, i.plan_id FROM recovery_deadletter d "
    "JOIN recovery_planitem i ON i.replay_id = d.replay_id "
    "WHERE d.id = ANY(%s::bigint[]) AND d.replay_id <> '' AND d.returned_from_id IS NULL AND i.letter_id <> d.id"
)


def letters_returned(letter_ids: Sequence[int], *, actor: str = "classification") -> int:
    """New letters carrying the ``x-replay-id`` of a plan item are that item's letter coming
    back to a DLQ (classification reads the header): each is linked to the original
    (``returned_from``), the original becomes returned, its ledger rows came back
    (redeadlettered, counted on their runs), and its failure group is reopened. One audit event
    for the batch. Returns how many came back."""
    if not letter_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_RETURNS, [list(letter_ids)])
        pairs = cursor.fetchall()
    if not pairs:
        return 0
    news, originals, plans = (list(column) for column in zip(*pairs, strict=True))
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE recovery_deadletter d SET returned_from_id = v.original FROM unnest(%s::bigint[], %s::bigint[]) "
            "AS v(id, original) WHERE d.id = v.id",
            [news, originals],
        )  # the new letters: rows nobody else writes yet
        cursor.execute(
            "WITH back AS (UPDATE recovery_ledgerentry l SET state = 'redeadlettered' "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS v(letter, plan), recovery_replayrun r "
            "WHERE r.plan_id = v.plan AND l.run_id = r.id AND l.letter_id = v.letter "
            "AND l.state IN ('published', 'verified') RETURNING l.run_id) "
            "UPDATE recovery_replayrun r SET redeadlettered = r.redeadlettered + n.count "
            "FROM (SELECT run_id, count(*) FROM back GROUP BY run_id) AS n WHERE r.id = n.run_id",
            [originals, plans],
        )
        cursor.execute(
            "UPDATE recovery_deadletter SET state = %s, state_before_plan = '', state_changed_at = %s "
            "WHERE id = ANY(%s::bigint[]) AND state = ANY(%s)",
            [S.RETURNED, now, originals, [*_SENDING, S.REPLAYED.value, S.RESOLVED.value]],  # planned: run still sending
        )
        cursor.execute(
            "UPDATE recovery_fingerprintgroup SET reopened_at = %s WHERE fingerprint IN ("
            "SELECT fingerprint FROM recovery_deadletter WHERE id = ANY(%s::bigint[]) AND fingerprint <> '') "
            "RETURNING fingerprint",
            [now, originals],
        )
        groups = [row[0] for row in cursor.fetchall()]
    audit_record(
        actor=actor, action=AuditAction.LETTERS_RETURNED,
        summary=f"{len(pairs)} replayed letter(s) came back to a DLQ; {len(groups)} failure group(s) reopened",
        after={"returned": [[new, original] for new, original, _plan in pairs[:EXAMPLES]], "letters": len(pairs),
               "groups": groups[:EXAMPLES]},
    )  # fmt: skip
    return len(pairs)
