"""Triage writes: bulk actions on letters, runbooks, and replay plan drafts from a selection.

Every action is attributable (invariant 8): the request writes its TriageAction and audit event
in one transaction; the letters it changed are listed in TriageActionItem rows written in the
same transaction as each change, so every letter's timeline shows who changed it, how and why.
Discarding never deletes: the row is kept and marked (``state`` discarded, reason, time).

A selection is frozen when the action is requested (``LetterFilter.frozen``): letters captured
afterwards never join it. Picked letters (up to SYNC_LIMIT) are changed in the request; a whole
filter result is changed by a background job in id-ordered chunks with its progress on a
TriageJob row, resumable after a crash (it continues after the last id it committed).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.db import connection, transaction
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.errors import InvalidInput
from recovery.jobs.lifecycle import job_beat, job_claim, job_finish
from recovery.jobs.queue import enqueue
from recovery.jobs.watchdog import stale_after
from recovery.letters import lifecycle
from recovery.models import (
    AuditAction,
    Category,
    ClassificationSource,
    DeadLetter,
    DeadLetterState,
    Disposition,
    FingerprintGroup,
    ReplayPlan,
    Runbook,
    TriageAction,
    TriageActionKind,
    TriageJob,
    TriageJobKind,
)
from recovery.observability import metrics
from recovery.permissions import Capability, ensure_can
from recovery.replay.defaults import plan_defaults
from recovery.triage.filters import LetterFilter

SYNC_LIMIT = 1000
CHUNK = 2000
MIN_REASON = 5


def _actor_name(actor: Any) -> str:
    return actor if isinstance(actor, str) else actor.get_username()


def _validate_action(kind: str, value: str, reason: str) -> tuple[str, str]:
    if kind not in TriageActionKind.values:
        raise InvalidInput(f"unknown action {kind!r}")
    if kind == TriageActionKind.SET_CATEGORY and value not in Category.values:
        raise InvalidInput(f"category: one of {', '.join(Category.values)}")
    if kind == TriageActionKind.SET_DISPOSITION and value not in Disposition.values:
        raise InvalidInput(f"disposition: one of {', '.join(Disposition.values)}")
    if kind in (TriageActionKind.HOLD, TriageActionKind.DISCARD):
        value = Disposition.HOLD if kind == TriageActionKind.HOLD else Disposition.DISCARD
    reason = reason.strip()
    if kind == TriageActionKind.DISCARD and len(reason) < MIN_REASON:
        raise InvalidInput(
            f"discarding needs a reason (at least {MIN_REASON} characters): it is kept in the audit trail"
        )
    return value, reason


def letters_triage(
    *, actor: Any, selection: LetterFilter, kind: str, value: str = "", reason: str = ""
) -> TriageAction:
    """Apply one triage action to a selection: in this request for picked letters, else as a
    background job. Returns the action (its ``job`` carries the progress when there is one)."""

    ensure_can(actor, Capability.CLASSIFY)
    value, reason = _validate_action(kind, value, reason)
    selection = selection.frozen()
    background = not selection.ids or len(selection.ids) > SYNC_LIMIT
    with transaction.atomic():
        action = TriageAction.objects.create(
            kind=kind,
            value=value,
            reason=reason,
            selection=selection.as_json(),
            actor=None if isinstance(actor, str) else actor,
            actor_name=_actor_name(actor),
        )
        if background:
            action.job = TriageJob.objects.create(
                kind=TriageJobKind.BULK,
                params={"action": action.pk, "after_id": 0},
                requested_by=action.actor,
            )
            action.save(update_fields=["job"])
            enqueue("triage_bulk", action.job.pk)
        else:
            ids = list(selection.apply().order_by("id").values_list("id", flat=True))
            action.letter_count = _apply_chunk(action, ids)
            action.save(update_fields=["letter_count"])
        audit_record(
            actor=actor,
            action=AuditAction.LETTERS_TRIAGED,
            obj=action,
            summary=(
                f"{action.get_kind_display().lower()}{f' {value}' if value else ''} on "
                f"{'a background job over ' if background else ''}{selection.describe()}"
                f"{'' if background else f': {action.letter_count} letter(s)'}"
            )[:500],
            after={"kind": kind, "value": value, "selection": selection.as_json(), "letters": action.letter_count},
            reason=reason,
        )
    return action


def _apply_chunk(action: TriageAction, ids: list[int]) -> int:
    """Change these letters and list them on the action; inside the caller's transaction.
    Returns how many letters were changed."""
    if not ids:
        return 0
    now = timezone.now()
    letters = DeadLetter.objects.filter(pk__in=ids)
    if action.kind == TriageActionKind.SET_CATEGORY:
        changed = letters.update(category=action.value, classified_by=ClassificationSource.MANUAL, classified_at=now)
    elif action.kind == TriageActionKind.DISCARD:
        changed = letters.exclude(state=DeadLetterState.DISCARDED).update(
            state=DeadLetterState.DISCARDED,
            disposition=Disposition.DISCARD,
            discarded_at=now,
            state_changed_at=now,
            discard_reason=action.reason,
            classified_by=ClassificationSource.MANUAL,
            classified_at=now,
        )
        metrics.letters_discarded(changed)  # recovery_letters_discarded_total, once committed
    else:  # set disposition, hold
        changed = letters.update(disposition=action.value, classified_by=ClassificationSource.MANUAL, classified_at=now)
        # issue 15 letter lifecycle: held letters leave the open work; another disposition brings them back
        if action.value == Disposition.HOLD:
            lifecycle.letters_held(ids)
        else:
            lifecycle.letters_unheld(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO recovery_triageactionitem (action_id, letter_id) SELECT %s, unnest(%s::bigint[]) "
            "ON CONFLICT DO NOTHING",
            [action.pk, ids],
        )
    return changed


def triage_bulk_run(*, job_id: int) -> TriageJob | None:
    """The background half of a bulk action: chunk after chunk in id order, each chunk with its
    progress in one transaction. Safe to run again after a crash: it resumes after the last id
    it committed. Returns None when another worker holds the job."""
    if not job_claim(TriageJob.objects.filter(kind=TriageJobKind.BULK), job_id, stale_after=stale_after()):
        return None
    job = TriageJob.objects.get(pk=job_id)
    action = TriageAction.objects.get(pk=job.params["action"])
    selection = LetterFilter.from_json(action.selection)
    try:
        if job.total is None:
            job.total = selection.apply().count()
            TriageJob.objects.filter(pk=job.pk).update(total=job.total)
        after_id = int(job.params.get("after_id", 0))
        while True:
            ids = list(selection.apply().filter(pk__gt=after_id).order_by("id").values_list("id", flat=True)[:CHUNK])
            if not ids:
                break
            with transaction.atomic():
                changed = _apply_chunk(action, ids)
                after_id = ids[-1]
                job.processed += len(ids)
                job.changed += changed
                job.params = {**job.params, "after_id": after_id}
                job_beat(TriageJob, job.pk, processed=job.processed, changed=job.changed, params=job.params)
    except Exception as exc:
        with transaction.atomic():
            job_finish(TriageJob, job.pk, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    with transaction.atomic():
        job_finish(TriageJob, job.pk)
        TriageAction.objects.filter(pk=action.pk).update(letter_count=job.processed)
        audit_record(
            actor="triage",
            action=AuditAction.LETTERS_TRIAGED,
            obj=action,
            summary=(
                f"bulk {action.get_kind_display().lower()} finished: {job.processed} letter(s), {job.changed} changed"
            ),
            after={"letters": job.processed, "changed": job.changed, "job": job.pk},
        )
    job.refresh_from_db()
    return job


# -- replay plan drafts ------------------------------------------------------------------------


def plan_draft_create(*, actor: Any, selection: LetterFilter, name: str, reason: str = "") -> ReplayPlan:
    """A draft replay plan over a frozen selection (issue 6 plans it further and freezes items
    on submit). Needs the plan capability."""
    ensure_can(actor, Capability.PLAN)
    name = name.strip()
    if not name:
        raise InvalidInput("a plan needs a name")
    if len(name) > 200:
        raise InvalidInput("the plan's name is longer than 200 characters")
    selection = selection.frozen()
    with transaction.atomic():
        plan = ReplayPlan.objects.create(
            name=name,
            reason=reason.strip(),
            author=actor,
            selection=selection.as_json(),
            selection_summary=selection.describe()[:500],
            **plan_defaults(),  # issue 15: default stop conditions and verification with evidence
        )
        audit_record(
            actor=actor,
            action=AuditAction.PLAN_CREATED,
            obj=plan,
            summary=f"replay plan {name!r} drafted from {plan.selection_summary}"[:500],
            after={
                "name": name,
                "selection": plan.selection,
                "stop_conditions": plan.stop_conditions,
                "verifications": plan.verifications,
            },  # fmt: skip
            reason=plan.reason,
        )
    return plan


# -- runbooks ------------------------------------------------------------------------------------


def _clean_links(links: Any) -> list[dict[str, str]]:
    if not isinstance(links, list):
        raise InvalidInput("links: a list of {title, url}")
    cleaned = []
    for link in links:
        if not isinstance(link, dict) or not str(link.get("url", "")).strip():
            raise InvalidInput("links: each link needs a url")
        url = str(link["url"]).strip()
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidInput(f"links: {url[:80]!r} is not an http(s) URL")
        cleaned.append({"title": str(link.get("title") or url).strip()[:200], "url": url[:2000]})
    return cleaned


def runbook_save(
    *, actor: Any, runbook: Runbook | None = None, title: str, owner: str = "", body: str = "", links: Any = ()
) -> Runbook:
    """Create or change a runbook; audited with before and after."""
    ensure_can(actor, Capability.CLASSIFY)
    title = title.strip()
    if not title:
        raise InvalidInput("a runbook needs a title")
    if len(body) > 100_000:
        raise InvalidInput("the runbook text is longer than 100,000 characters")
    links = _clean_links(list(links))
    fields = {"title": title[:200], "owner": owner.strip()[:200], "body": body, "links": links}
    with transaction.atomic():
        if runbook is None:
            before = None
            runbook = Runbook.objects.create(**fields, updated_by=None if isinstance(actor, str) else actor)
            action = AuditAction.RUNBOOK_CREATED
        else:
            runbook = Runbook.objects.select_for_update().get(pk=runbook.pk)
            before = {"title": runbook.title, "owner": runbook.owner, "body": runbook.body, "links": runbook.links}
            for key, value in fields.items():
                setattr(runbook, key, value)
            runbook.updated_by = None if isinstance(actor, str) else actor
            runbook.save()
            action = AuditAction.RUNBOOK_UPDATED
        audit_record(
            actor=actor, action=action, obj=runbook, summary=f"runbook {title!r}"[:500], before=before, after=fields
        )
    return runbook


def group_runbook_set(*, actor: Any, group: FingerprintGroup, runbook: Runbook | None) -> FingerprintGroup:
    """Attach a runbook to a fingerprint group (or detach it with None); audited."""
    ensure_can(actor, Capability.CLASSIFY)
    with transaction.atomic():
        group = FingerprintGroup.objects.select_for_update().get(pk=group.pk)
        before = group.runbook_id
        group.runbook = runbook
        group.save(update_fields=["runbook"])
        audit_record(
            actor=actor,
            action=AuditAction.RUNBOOK_ATTACHED,
            obj=group,
            summary=(
                f"runbook {runbook.title!r} attached to group {group.fingerprint[:12]}"
                if runbook
                else f"runbook detached from group {group.fingerprint[:12]}"
            )[:500],
            before={"runbook": before},
            after={"runbook": runbook.pk if runbook else None},
        )
    return group
