"""The ledger's leases on the real PostgreSQL (invariant 4: at most one owner per row, and only the
holder of a row's current fencing token records its outcome). A claimed row stays pending with a
lease, so claiming writes no index entry; these tests pin what that must still guarantee."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from recovery.models import AttemptState, BrokerKind, LedgerEntry, ReplayRun
from recovery.replay.engine import Worker
from recovery.replay.ledger import Outcome, record_outcomes
from tests.factories import BrokerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger_run(chk_plan, chk_item, chk_target, chk_run, chk_ledger):
    """A running run of ``n`` pending ledger rows, and its reloaded row (with its plan)."""

    def make(n: int = 6) -> ReplayRun:
        broker = BrokerFactory(kind=BrokerKind.RABBITMQ)
        plan = chk_plan(batch_size=10)
        run = chk_run(plan, phase="full", total=n)
        for _ in range(n):
            chk_ledger(run, chk_item(plan, chk_target(broker, "", "orders")))
        return ReplayRun.objects.select_related("plan").get(pk=run.pk)

    return make


def _confirmed(claimed) -> list[Outcome]:
    return [Outcome(c.ledger_id, c.token, True, "", f"m-{c.ledger_id}") for c in claimed]


def test_a_claimed_row_is_leased_to_one_worker_and_skipped_by_the_next_claim(ledger_run) -> None:
    run = ledger_run(6)
    first, second = Worker(run.pk, 0), Worker(run.pk, 1)

    mine = first._claim(run, 4)
    theirs = second._claim(run, 4)

    assert len(mine) == 4 and len(theirs) == 2
    assert not {c.ledger_id for c in mine} & {c.ledger_id for c in theirs}
    leased = LedgerEntry.objects.filter(pk__in=[c.ledger_id for c in mine])
    assert {(row.state, row.lease_owner) for row in leased} == {(AttemptState.PENDING, first.owner)}
    assert second._claim(run, 4) == []  # every row is leased and no lease has expired


def test_only_the_holder_of_the_current_token_records_an_outcome(ledger_run) -> None:
    run = ledger_run(3)
    stale, fresh = Worker(run.pk, 0), Worker(run.pk, 1)
    old = stale._claim(run, 3)
    LedgerEntry.objects.filter(run=run).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    new = fresh._claim(run, 3)  # the expired leases are claimed again, each with a new token
    assert [c.ledger_id for c in new] == [c.ledger_id for c in old]
    assert all(n.token == o.token + 1 for n, o in zip(new, old, strict=True))

    assert record_outcomes(run.pk, stale.owner, _confirmed(old), timezone.now()) == (0, 0)
    assert set(LedgerEntry.objects.filter(run=run).values_list("state", flat=True)) == {AttemptState.PENDING}
    assert record_outcomes(run.pk, fresh.owner, _confirmed(new), timezone.now()) == (3, 0)
    assert ReplayRun.objects.get(pk=run.pk).published == 3
    # recording the same outcomes again counts nothing twice
    assert record_outcomes(run.pk, fresh.owner, _confirmed(new), timezone.now()) == (0, 0)
    assert ReplayRun.objects.get(pk=run.pk).published == 3


def test_a_recorded_row_is_never_claimed_again_and_a_released_one_is(ledger_run) -> None:
    run = ledger_run(4)
    worker = Worker(run.pk, 0)
    batch = worker._claim(run, 4)
    record_outcomes(run.pk, worker.owner, _confirmed(batch[:2]), timezone.now())
    worker._release(batch[2:])  # paused before publishing these two

    again = worker._claim(run, 4)

    assert [c.ledger_id for c in again] == [c.ledger_id for c in batch[2:]]
    released = LedgerEntry.objects.filter(pk__in=[c.ledger_id for c in again])
    assert [row.attempts for row in released] == [1, 1]  # giving a row back burns no attempt


def test_an_unconfirmed_row_goes_back_without_its_lease_until_its_last_attempt(ledger_run) -> None:
    run = ledger_run(1)
    worker = Worker(run.pk, 0)
    for attempt in (1, 2, 3):
        (claimed,) = worker._claim(run, 1)
        refused = Outcome(claimed.ledger_id, claimed.token, False, f"nack {attempt}", "")
        assert record_outcomes(run.pk, worker.owner, [refused], timezone.now()) == (0, 1 if attempt == 3 else 0)
    row = LedgerEntry.objects.get(run=run)
    assert (row.state, row.attempts, row.error) == (AttemptState.FAILED, 3, "nack 3")
    assert worker._claim(run, 1) == []


def test_the_run_page_shows_leased_rows_apart_from_pending_ones(ledger_run, client, make_user) -> None:
    from recovery.permissions import Role

    run = ledger_run(5)
    Worker(run.pk, 0)._claim(run, 2)
    client.force_login(make_user(Role.VIEWER))

    page = client.get(f"/runs/{run.pk}/", secure=True, headers={"HX-Request": "true"})

    assert page.status_code == 200
    assert "leased 2" in page.content.decode() and "pending 3" in page.content.decode()


def test_batch_statements_keep_index_plans_after_the_statistics_change(ledger_run) -> None:
    """An ANALYZE taken while every row was pending must not turn claiming or recording a batch
    into a scan of the table or a scan per row (the planner would expect no leased row): the batch
    statements pin their plans (recovery.replay.ledger)."""
    from recovery.replay.engine import _CLAIM_SQL
    from recovery.replay.ledger import BATCH_UPDATE_PLAN, CLAIM_PLAN, HELD_BY_OWNER

    run = ledger_run(50)
    worker = Worker(run.pk, 0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE recovery_ledgerentry")
        cursor.execute(CLAIM_PLAN)
        cursor.execute("EXPLAIN " + _CLAIM_SQL, [run.pk, 50, worker.owner, 60])
        claim_plan = "\n".join(row[0] for row in cursor.fetchall())
    batch = worker._claim(run, 50)
    ids = [c.ledger_id for c in batch]
    with connection.cursor() as cursor:
        cursor.execute(BATCH_UPDATE_PLAN)
        cursor.execute(
            "EXPLAIN UPDATE recovery_ledgerentry l SET state = 'published' FROM unnest(%s::bigint[], %s::bigint[]) "  # noqa: S608 - constant
            f"AS v(id, token) WHERE {HELD_BY_OWNER}",
            [ids, [c.token for c in batch], ids, worker.owner],
        )
        record_plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Seq Scan" not in claim_plan and "Hash" not in claim_plan, claim_plan
    assert "Index Scan using recovery_ledgerentry_pkey on recovery_ledgerentry l" in claim_plan, claim_plan
    assert "Nested Loop" not in record_plan and "Seq Scan" not in record_plan, record_plan
    assert "Hash Join" in record_plan, record_plan
    assert record_outcomes(run.pk, worker.owner, _confirmed(batch), timezone.now()) == (50, 0)


def test_a_letter_or_plan_item_in_a_ledger_cannot_be_deleted(ledger_run) -> None:
    """The ledger has no database constraints (migrations 0013 and 0014, for the cost of a deferred
    check per row at commit); PROTECT, enforced by Django, still keeps its items and letters."""
    from django.db.models import ProtectedError

    from recovery.models import DeadLetter, PlanItem

    run = ledger_run(1)
    row = LedgerEntry.objects.get(run=run)

    with pytest.raises(ProtectedError):
        DeadLetter.objects.filter(pk=row.letter_id).delete()
    with pytest.raises(ProtectedError):
        PlanItem.objects.filter(pk=row.item_id).delete()
    assert DeadLetter.objects.filter(pk=row.letter_id).exists() and PlanItem.objects.filter(pk=row.item_id).exists()
