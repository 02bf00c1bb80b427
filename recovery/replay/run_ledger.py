"""What a run did, letter by letter (issue 15, part 8): its ledger rows with each one's outcome,
filtered, paged for the run's ledger page and streamed as CSV or JSON lines for an export.

An outcome is read from the row as stored: pending, held behind its group (ordering), in flight
(leased by a worker), published, failed (with the broker's reason), not sent (skipped), returned
(came back to a DLQ) or resolved (verified with evidence). *Re-sent* is not an outcome but a mark
any published row can carry: the row was claimed again after its worker was lost, so its message
may have reached the target twice, with the same ``x-replay-id`` (invariant 4).

Masks fail closed: the only free text of a row, the broker's error, passes through the masker of
the letter's DLQ for the reader (an error can quote what it refused), in the page and in every
export line alike; nothing of the letter's body or headers is read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Case, F, QuerySet, Value, When

from recovery.audit.services import audit_record
from recovery.errors import InvalidInput
from recovery.masking.letters import letter_masker
from recovery.models import HELD_ROWS, LEASED_ROWS, AttemptState, AuditAction, Broker, LedgerEntry, ReplayRun
from recovery.permissions import Capability, ensure_can
from recovery.replay import targets

ROWS_PER_PAGE = 100
EXPORT_CHUNK = 2000

# Filter value -> (label, what it selects). "resent" selects by the mark, the rest by outcome.
OUTCOMES: dict[str, str] = {
    "pending": "pending",
    "held": "held behind its group",
    "leased": "in flight",
    "published": "published",
    "resent": "re-sent after a worker loss",
    "failed": "failed",
    "skipped": "not sent (discarded meanwhile)",
    "redeadlettered": "returned to a DLQ",
    "verified": "resolved",
}
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
EXPORT_COLUMNS = (
    "letter", "dlq", "outcome", "resent", "attempts", "published_at", "replay_id", "target", "broker_message_id",
    "error",
)  # fmt: skip

_SHOWN = Case(  # held and in flight are both stored as pending
    When(HELD_ROWS, then=Value(AttemptState.HELD)),
    When(LEASED_ROWS, then=Value(AttemptState.LEASED)),
    default=F("state"),
)


def ledger_rows(run: ReplayRun, outcome: str = "") -> QuerySet:
    """The run's rows in ledger order, each annotated with ``outcome``; ``outcome`` filters (an
    unknown value filters nothing)."""
    rows = (
        LedgerEntry.objects.filter(run=run)
        .annotate(outcome=_SHOWN)
        .select_related("letter__dlq", "item")
        .only(
            "state",
            "lease_owner",
            "lease_expires_at",
            "attempts",
            "published_at",
            "broker_message_id",
            "error",
            "resent",
            "letter__id",
            "letter__dlq__name",
            "letter__dlq__mask_json_paths",
            "letter__dlq__mask_headers",
            "letter__dlq__mask_emails",
            "letter__dlq__mask_card_numbers",
            "item__replay_id",
            "item__target",
        )  # fmt: skip
        .order_by("id")
    )
    if outcome == "resent":
        return rows.filter(resent=True)
    if outcome in OUTCOMES:
        return rows.filter(outcome=outcome)
    return rows


@dataclass(frozen=True)
class LedgerRow:
    entry: LedgerEntry
    outcome: str  # OUTCOMES label
    target: str
    error: str  # masked for the reader


def _row(entry: LedgerEntry, user: Any, broker_names: dict[int, str]) -> LedgerRow:
    target = entry.item.target or {}
    return LedgerRow(
        entry=entry,
        outcome=OUTCOMES.get(entry.outcome, entry.outcome),
        target=targets.describe(target, broker_names) if target else "",
        error=letter_masker(entry.letter, user).text(entry.error) if entry.error else "",
    )


def ledger_page(run: ReplayRun, outcome: str, page_number: Any, *, user: Any) -> tuple[Page, list[LedgerRow]]:
    page = Paginator(ledger_rows(run, outcome), ROWS_PER_PAGE).get_page(page_number)
    names = dict(Broker.objects.values_list("id", "name"))
    return page, [_row(entry, user, names) for entry in page.object_list]


def _export_record(row: LedgerRow) -> dict[str, Any]:
    entry = row.entry
    return {
        "letter": entry.letter_id,
        "dlq": entry.letter.dlq.name,
        "outcome": row.outcome,
        "resent": entry.resent,
        "attempts": entry.attempts,
        "published_at": entry.published_at.isoformat() if entry.published_at else "",
        "replay_id": entry.item.replay_id,
        "target": row.target,
        "broker_message_id": entry.broker_message_id,
        "error": row.error,
    }


def ledger_export(*, actor: Any, run: ReplayRun, outcome: str, fmt: str) -> Iterator[str]:
    """Service: who exported which run's ledger, with which filter, is audited before the first
    line is produced (anyone who may see the console may export what its pages show)."""
    ensure_can(actor, Capability.VIEW)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r} (use {' or '.join(EXPORT_FORMATS)})")
    audit_record(
        actor=actor,
        action=AuditAction.RUN_LEDGER_EXPORTED,
        obj=run,
        summary=f"exported the ledger of run {run.pk} as {fmt}"
        + (f" ({OUTCOMES[outcome]})" if outcome in OUTCOMES else ""),
        after={"format": fmt, "outcome": outcome if outcome in OUTCOMES else ""},
    )
    return export_lines(run, outcome, fmt, user=actor)


def export_lines(run: ReplayRun, outcome: str, fmt: str, *, user: Any) -> Iterator[str]:
    """The filtered ledger as CSV (with a header line) or JSON lines, read in chunks by id so a
    large run streams in bounded memory; every error masked for ``user``."""
    names = dict(Broker.objects.values_list("id", "name"))
    if fmt == "csv":
        yield _csv_line(EXPORT_COLUMNS)
    last = 0
    while True:
        chunk = list(ledger_rows(run, outcome).filter(id__gt=last)[:EXPORT_CHUNK])
        if not chunk:
            return
        for entry in chunk:
            record = _export_record(_row(entry, user, names))
            yield _csv_line(record.values()) if fmt == "csv" else json.dumps(record) + "\n"
        last = chunk[-1].id


def _csv_line(values: Any) -> str:
    """One CSV line; a cell a spreadsheet would run as a formula (=, +, -, @ first) is quoted
    with a leading apostrophe, so an error text cannot become a formula in someone's sheet."""
    out = io.StringIO()
    csv.writer(out).writerow([_inert(v) for v in values])
    return out.getvalue()


def _inert(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value
