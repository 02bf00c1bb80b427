"""Reads for the letter page: the letter with everything its page names, its runbooks and its
timeline, in a fixed number of queries whatever the letter's history (no N+1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from recovery.audit.selectors import audit_timeline
from recovery.letters.timeline import lifecycle_entries
from recovery.models import DeadLetter, FingerprintGroup, Runbook, TriageActionItem

TIMELINE_LIMIT = 100  # audit events and triage actions each


def letter_for_detail() -> QuerySet[DeadLetter]:
    """Letters with their DLQ, broker, rule and runbook, capture pass and its requester joined."""
    return DeadLetter.objects.select_related(
        "dlq", "dlq__broker", "rule", "rule__runbook", "capture_pass", "capture_pass__requested_by"
    )


@dataclass(frozen=True)
class LetterRunbook:
    source: str  # what attached it: the rule or the fingerprint group
    runbook: Runbook


def letter_group_and_runbooks(letter: DeadLetter) -> tuple[FingerprintGroup | None, list[LetterRunbook]]:
    """The letter's fingerprint group and the runbooks that cover it (the rule's, then the
    group's; one runbook attached to both is listed once)."""
    group = None
    if letter.fingerprint:
        group = FingerprintGroup.objects.select_related("runbook").filter(fingerprint=letter.fingerprint).first()
    runbooks: list[LetterRunbook] = []
    if letter.rule is not None and letter.rule.runbook is not None:
        runbooks.append(LetterRunbook(f"rule “{letter.rule.name}”", letter.rule.runbook))
    if group is not None and group.runbook is not None and group.runbook_id not in {r.runbook.pk for r in runbooks}:
        runbooks.append(LetterRunbook("its fingerprint group", group.runbook))
    return group, runbooks


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    what: str
    detail: str = ""
    actor: str = ""
    reason: str = ""
    source: str = "letter"  # "letter", "capture", "audit", "triage" or "lifecycle"


def letter_timeline(letter: DeadLetter) -> list[TimelineEntry]:
    """Everything that happened to the letter, oldest first: its failures, its capture (and the
    capture pass), classification, triage actions, audit events, removal from the broker and
    discard, and its lifecycle (recovery.letters.timeline: plans, runs, returns). Six queries on top
    of ``letter_for_detail``."""
    entries = _letter_entries(letter)
    for event in audit_timeline(object_type="recovery.deadletter", object_id=str(letter.pk), limit=TIMELINE_LIMIT):
        entries.append(
            TimelineEntry(
                event.at,
                event.get_action_display(),
                f"#{event.seq} {event.summary}",
                event.actor_name,
                event.reason,
                "audit",
            )  # fmt: skip
        )
    items = (
        TriageActionItem.objects.filter(letter=letter)
        .select_related("action")
        .order_by("-action__created_at")[:TIMELINE_LIMIT]
    )
    for item in items:
        action = item.action
        value = f" → {action.value}" if action.value else ""
        entries.append(
            TimelineEntry(
                action.created_at,
                f"{action.get_kind_display()}{value}",
                f"one of {action.letter_count} letters" if action.letter_count > 1 else "",
                action.actor_name,
                action.reason,
                "triage",
            )  # fmt: skip
        )
    entries += lifecycle_entries(letter, TimelineEntry)  # issue 15: plans, runs, returns
    return sorted(entries, key=lambda entry: entry.at)


def _letter_entries(letter: DeadLetter) -> list[TimelineEntry]:
    entries = []
    if letter.first_failed_at:
        entries.append(TimelineEntry(letter.first_failed_at, "First failed", letter.reason))
    if letter.last_failed_at and letter.last_failed_at != letter.first_failed_at:
        attempts = f"attempt {letter.attempt_count}" if letter.attempt_count else ""
        entries.append(TimelineEntry(letter.last_failed_at, "Last failed", attempts))
    entries.append(TimelineEntry(letter.captured_at, "Captured", _capture_detail(letter), source="capture"))
    if letter.classified_at:
        how = letter.get_classified_by_display() if letter.classified_by else ""
        rule = f" (rule {letter.rule.name})" if letter.rule is not None else ""
        detail = f"{letter.get_category_display()} / {letter.get_disposition_display()}: {how}{rule}"
        entries.append(TimelineEntry(letter.classified_at, "Classified", detail))
    if letter.removed_at:
        entries.append(TimelineEntry(letter.removed_at, "Removed from the broker", "the broker confirmed it"))
    if letter.discarded_at:
        entries.append(TimelineEntry(letter.discarded_at, "Discarded", reason=letter.discard_reason))
    return entries


def _capture_detail(letter: DeadLetter) -> str:
    seen = f"; delivered {letter.times_seen} times" if letter.times_seen > 1 else ""
    capture = letter.capture_pass
    if capture is None:
        return f"into {letter.dlq.name}{seen}"
    who = f" requested by {capture.requested_by.get_username()}" if capture.requested_by else ""
    return f"by capture pass #{capture.pk} ({capture.get_trigger_display()}{who}, {capture.get_state_display()}){seen}"
