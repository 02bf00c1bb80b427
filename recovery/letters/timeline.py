"""A letter's lifecycle on its page's timeline (issue 15 part 1): the plans that froze it, each
run's publish and its outcome, where it came back, and its current state. Read from the plan
items, the ledger and the returned-letter links, in four queries whatever the letter's history:
the bulk moves are audited per batch on their runs, and these rows say which letter each was."""

from __future__ import annotations

from typing import Any

from recovery.models import AttemptState, DeadLetter, LedgerEntry, PlanItem, PlanItemState, RunState

LIMIT = 50  # plan items, ledger rows and returns each


def lifecycle_entries(letter: DeadLetter, entry: Any) -> list[Any]:
    """Timeline entries (built with ``entry``, recovery.inspection.selectors.TimelineEntry)."""
    entries = []
    items = PlanItem.objects.filter(letter=letter).select_related("plan").order_by("-id")[:LIMIT]
    for item in items:
        plan = item.plan
        if plan.submitted_at is None:
            continue
        if item.state == PlanItemState.INCLUDED:
            again = f" (replay again: {plan.replay_again_reason})" if item.replay_again else ""
            detail = f"plan {plan.pk} “{plan.name}”, replay id {item.replay_id}{again}"
            entries.append(entry(plan.submitted_at, "In a plan", detail, source="lifecycle"))
        else:
            entries.append(entry(plan.submitted_at, "Left out of a plan", f"plan {plan.pk}: {item.exclusion}",
                                 source="lifecycle"))  # fmt: skip
    rows = LedgerEntry.objects.filter(letter=letter).select_related("run").order_by("-id")[:LIMIT]
    for row in rows:
        run = row.run
        if run.started_at:
            entries.append(entry(run.started_at, "Replaying", f"run {run.pk} of plan {run.plan_id} started",
                                 source="lifecycle"))  # fmt: skip
        if row.published_at:
            entries.append(entry(row.published_at, "Replayed", _published(row), source="lifecycle"))
        verified = row.state == AttemptState.VERIFIED or (row.published_at and run.state == RunState.VERIFIED)
        if verified and row.state != AttemptState.REDEADLETTERED and run.finished_at:
            entries.append(entry(run.finished_at, "Resolved", f"run {run.pk}'s verification passed",
                                 source="lifecycle"))  # fmt: skip
        if row.state == AttemptState.FAILED:
            entries.append(entry(run.finished_at or run.started_at or run.created_at, "Replay failed",
                                 f"run {run.pk}: {row.error[:300]}", source="lifecycle"))  # fmt: skip
    returns = DeadLetter.objects.filter(returned_from=letter).order_by("-id").only("id", "captured_at")[:LIMIT]
    for back in returns:
        entries.append(entry(back.captured_at, "Returned", f"came back to a DLQ as letter {back.pk}",
                             source="lifecycle"))  # fmt: skip
    if letter.returned_from_id:
        entries.append(entry(letter.captured_at, "Came back from a replay",
                             f"of letter {letter.returned_from_id} (x-replay-id {letter.replay_id})",
                             source="lifecycle"))  # fmt: skip
    if letter.state_changed_at:
        entries.append(entry(letter.state_changed_at, f"Now: {letter.get_state_display()}", source="lifecycle"))
    return entries


def _published(row: LedgerEntry) -> str:
    resent = f", after {row.attempts} attempts" if row.attempts > 1 else ""
    message = f", broker message id {row.broker_message_id}" if row.broker_message_id else ""
    return f"run {row.run_id}: published, broker confirmed{message}{resent}"
