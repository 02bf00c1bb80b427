"""Classification writes: classifying new letters, editing the rules, re-classifying after a
rule change.

- ``letters_classify`` gives each new letter its fingerprint, search text, broker-side expiry,
  duplicate mark and rule outcome, and counts it in its fingerprint group: set-based, a few
  statements per chunk (``store``), cheap enough to run after every capture batch.
- Rule changes are admin-only (``Capability.MANAGE``), audited in their own transaction
  (invariant 8), serialised by one advisory lock, and each enqueues a re-classification on
  commit: a TriageJob row created before the job is enqueued, carrying its progress.
- ``reclassify_run`` walks letters in id order, checkpointing its position on the job row in the
  same transaction as each chunk's writes, so a crashed job re-run continues where it stopped.
  Letters classified by hand or as duplicates are never re-classified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from recovery.audit.services import audit_record
from recovery.classification import store
from recovery.classification.batch import ClassifyResult, classify_chunk
from recovery.classification.defaults import DEFAULT_RULES
from recovery.classification.rule_data import NEW_RULE, apply, clean, snapshot
from recovery.classification.selectors import rules_matcher
from recovery.errors import InvalidInput
from recovery.jobs.lifecycle import job_claim, job_finish
from recovery.jobs.queue import enqueue
from recovery.jobs.watchdog import stale_after
from recovery.models import (
    AuditAction,
    ClassificationRule,
    DeadLetter,
    DeadLetterQueue,
    JobState,
    TriageJob,
    TriageJobKind,
)
from recovery.observability import tracing
from recovery.permissions import Capability, ensure_can

CHUNK = 1000
RECLASSIFY_CHUNK = 5000
# pg_advisory_xact_lock key serialising rule writes: positions and the set-of-names checks
# (reorder, default install) see one consistent rule list.
RULES_LOCK = 0x72756C6573  # "rules"
RECLASSIFY_FIELDS = ("enabled", "conditions", "category", "disposition")


# -- classifying new letters -------------------------------------------------------------------


def letters_classify(
    *, letter_ids: Iterable[int] | None = None, dlq: DeadLetterQueue | None = None, limit: int = 10_000
) -> ClassifyResult:
    """Classify letters not classified yet: the given ids (capture passes the batch it just
    stored), else up to ``limit`` of the oldest, optionally of one DLQ.

    Each letter gets its fingerprint (counted in its FingerprintGroup), its search text, its
    broker-side expiry, and an outcome: duplicate (held) of the first letter that is a delivery
    of the same message (recovery.classification.duplicates: the producer's message id or the
    original's broker identity, never the body alone), else the first matching enabled rule,
    else unknown/hold by default. Letters already classified are skipped, so it is safe to run twice.
    """
    attributes = {"recovery.dlq": dlq.name if dlq else None, "recovery.classify.limit": limit}
    with tracing.span("classification.classify", attributes) as span:
        result = _classify(letter_ids=letter_ids, dlq=dlq, limit=limit)
        span.set_attributes({f"recovery.classify.{name}": value for name, value in vars(result).items()})
    return result


def dlq_classify_pending(*, dlq_id: int, rounds: int = 1000) -> int:
    """The classify job: a DLQ's letters not classified yet, 10,000 at a time, until none is left
    (10 million at most per job; the DLQ's next capture asks again). Returns how many it saw."""
    dlq = DeadLetterQueue.objects.filter(pk=dlq_id).first()
    seen = 0
    for _ in range(rounds if dlq is not None else 0):
        round_seen = letters_classify(dlq=dlq).seen
        if not round_seen:
            break
        seen += round_seen
    return seen


def _classify(*, letter_ids: Iterable[int] | None, dlq: DeadLetterQueue | None, limit: int) -> ClassifyResult:
    result = ClassifyResult()
    matcher = rules_matcher()
    if letter_ids is not None:
        ids = sorted(set(letter_ids))
        for start in range(0, len(ids), CHUNK):
            chunk = store.new_letters(
                ids=ids[start : start + CHUNK], after_id=0, dlq_id=None, limit=CHUNK, full_body=matcher.needs_body
            )
            if chunk:
                classify_chunk(chunk, matcher, result)
        return result
    after_id = 0
    while result.seen < limit:
        chunk = store.new_letters(
            ids=None,
            after_id=after_id,
            dlq_id=dlq.pk if dlq else None,
            limit=min(CHUNK, limit - result.seen),
            full_body=matcher.needs_body,
        )
        if not chunk:
            break
        after_id = chunk[-1].facts.id
        classify_chunk(chunk, matcher, result)
    return result


# -- rules ------------------------------------------------------------------------------------


def _lock_rules() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RULES_LOCK])


def _name_taken(name: str, exclude: int | None = None) -> None:
    if ClassificationRule.objects.filter(name=name).exclude(pk=exclude).exists():
        raise InvalidInput(f"a rule named {name!r} exists already")


def _next_position() -> int:
    last = ClassificationRule.objects.order_by("-position").values_list("position", flat=True).first()
    return (last or 0) + 10


def _reclassify_job(actor: Any, why: str) -> TriageJob:
    """The queued re-classification (an existing queued one absorbs this change), enqueued again
    on commit: the claim is conditional, so a second delivery is harmless."""
    job = TriageJob.objects.filter(kind=TriageJobKind.RECLASSIFY, state=JobState.QUEUED).order_by("-pk").first()
    if job is None:
        user = actor if getattr(actor, "is_authenticated", False) else None
        job = TriageJob.objects.create(kind=TriageJobKind.RECLASSIFY, requested_by=user, params={"why": why[:500]})
    enqueue("reclassify", job.pk)
    return job


def rule_create(*, actor: Any, data: dict[str, Any]) -> ClassificationRule:
    """Add a rule (at the end unless ``data['position']`` says where); re-classifies on commit."""
    ensure_can(actor, Capability.MANAGE)
    values = clean(data, NEW_RULE)
    with transaction.atomic():
        _lock_rules()
        _name_taken(values["name"])
        rule = ClassificationRule(position=data.get("position") or _next_position())
        apply(rule, values)
        rule.save()
        job = _reclassify_job(actor, f"rule {rule.name} added")
        audit_record(
            actor=actor,
            action=AuditAction.RULE_CREATED,
            obj=rule,
            summary=f"rule {rule.name!r} added: {rule.category}/{rule.disposition}",
            after={**snapshot(rule), "reclassify_job": job.pk},
        )
    return rule


def rule_update(*, actor: Any, rule: ClassificationRule, data: dict[str, Any]) -> ClassificationRule:
    """Change a rule (only the keys given); re-classifies on commit when the change can alter an
    outcome (conditions, enabled, category, disposition). No change, no event."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        _lock_rules()
        rule = ClassificationRule.objects.select_for_update().get(pk=rule.pk)
        before = snapshot(rule)
        values = clean(data, {**NEW_RULE, **{k: v for k, v in before.items() if k in NEW_RULE}})
        _name_taken(values["name"], exclude=rule.pk)
        apply(rule, values)
        after = snapshot(rule)
        if after == before:
            return rule
        rule.save()
        job = None
        if any(before[k] != after[k] for k in RECLASSIFY_FIELDS):
            job = _reclassify_job(actor, f"rule {rule.name} changed")
        changed = [k for k in after if after[k] != before[k]]
        audit_record(
            actor=actor,
            action=AuditAction.RULE_UPDATED,
            obj=rule,
            summary=f"rule {rule.name!r} changed: {', '.join(changed)}",
            before=before,
            after={**after, "reclassify_job": job.pk if job else None},
        )
    return rule


def rule_delete(*, actor: Any, rule: ClassificationRule) -> None:
    """Delete a rule; its letters are re-classified by the remaining rules on commit."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        _lock_rules()
        rule = ClassificationRule.objects.select_for_update().get(pk=rule.pk)
        before, rule_id = snapshot(rule), rule.pk
        rule.delete()
        job = _reclassify_job(actor, f"rule {before['name']} deleted")
        audit_record(
            actor=actor,
            action=AuditAction.RULE_DELETED,
            object_type="recovery.classificationrule",
            object_id=str(rule_id),
            summary=f"rule {before['name']!r} deleted",
            before=before,
            after={"reclassify_job": job.pk},
        )


def rules_reorder(*, actor: Any, rule_ids: list[int]) -> list[ClassificationRule]:
    """Put every rule in the given order (positions 10, 20, ...). ``rule_ids`` must name every
    rule once: an order built from a stale page is refused rather than half applied."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        _lock_rules()
        rules = list(ClassificationRule.objects.select_for_update().order_by("position", "id"))
        if len(rule_ids) != len(set(rule_ids)) or set(rule_ids) != {r.pk for r in rules}:
            raise InvalidInput("the rules changed meanwhile: reload the page and move the rule again")
        by_id = {r.pk: r for r in rules}
        ordered = [by_id[pk] for pk in rule_ids]
        if ordered == rules and all(r.position == (i + 1) * 10 for i, r in enumerate(rules)):
            return rules
        for index, rule in enumerate(ordered, start=1):
            rule.position = index * 10
        ClassificationRule.objects.bulk_update(ordered, ["position"])
        job = _reclassify_job(actor, "rules reordered")
        audit_record(
            actor=actor,
            action=AuditAction.RULES_REORDERED,
            summary="classification rules reordered",
            object_type="recovery.classificationrule",
            before={"order": [r.name for r in rules]},
            after={"order": [r.name for r in ordered], "reclassify_job": job.pk},
        )
    return ordered


def default_rules_install(*, actor: Any) -> list[ClassificationRule]:
    """Add the shipped default rules (recovery.classification.defaults) whose names are missing,
    after the existing rules, in their shipped order. Idempotent: a second call adds nothing,
    writes no event and enqueues nothing. Rules an admin edited are kept as they are."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        _lock_rules()
        existing = set(ClassificationRule.objects.values_list("name", flat=True))
        position = _next_position()
        installed = []
        for spec in DEFAULT_RULES:
            if spec["name"] in existing:
                continue
            rule = ClassificationRule(position=position, shipped=True)
            apply(rule, clean(spec, NEW_RULE))
            installed.append(rule)
            position += 10
        if not installed:
            return []
        ClassificationRule.objects.bulk_create(installed)
        job = _reclassify_job(actor, "default rules installed")
        audit_record(
            actor=actor,
            action=AuditAction.RULES_SEEDED,
            object_type="recovery.classificationrule",
            summary=f"{len(installed)} default classification rule(s) installed",
            after={"rules": [r.name for r in installed], "reclassify_job": job.pk},
        )
    return installed


# -- re-classification ------------------------------------------------------------------------


def reclassify_request(*, actor: Any) -> TriageJob:
    """'Re-classify now': re-apply the rules to every letter not classified by hand, and classify
    any letter still waiting for its first classification. Refused while one is queued."""
    ensure_can(actor, Capability.MANAGE)
    with transaction.atomic():
        _lock_rules()
        queued = TriageJob.objects.filter(kind=TriageJobKind.RECLASSIFY, state=JobState.QUEUED).first()
        if queued is not None:
            raise InvalidInput(f"a re-classification is already queued (#{queued.pk})")
        job = _reclassify_job(actor, "requested")
        audit_record(
            actor=actor, action=AuditAction.RECLASSIFY_REQUESTED, obj=job, summary="re-classification requested"
        )
    return job


def _claim(job_id: int) -> bool:
    """QUEUED, FAILED (a re-run) or RUNNING with a stale heartbeat (its worker died) -> RUNNING."""
    reclassify_jobs = TriageJob.objects.filter(kind=TriageJobKind.RECLASSIFY)
    return job_claim(reclassify_jobs, job_id, stale_after=stale_after(), rerun_failed=True)


def _progress(job: TriageJob, *, seen: int, changed: int, **params: Any) -> None:
    job.params = {**job.params, **params}
    TriageJob.objects.filter(pk=job.pk).update(
        processed=F("processed") + seen, changed=F("changed") + changed, params=job.params, heartbeat_at=timezone.now()
    )


def _superseded(job: TriageJob) -> int | None:
    newer = TriageJob.objects.filter(kind=TriageJobKind.RECLASSIFY, pk__gt=job.pk).order_by("pk").first()
    return newer.pk if newer else None


def _reapply(job: TriageJob) -> int | None:
    """Re-apply the rules chunk by chunk from the job's checkpoint; the pk of a newer job if one
    supersedes this one (it redoes everything, so this one may stop)."""
    while True:
        with transaction.atomic():
            matcher = rules_matcher()
            letters = store.classified_letters(
                after_id=job.params.get("after_id", 0),
                limit=RECLASSIFY_CHUNK,
                full_body=matcher.needs_body,
                headers=matcher.needs_headers,
            )
            if not letters:
                return None
            now = timezone.now()
            rows = []
            for letter in letters:
                outcome = matcher.classify(letter.facts, now)
                new = (outcome.category, outcome.disposition, outcome.source, outcome.rule_id)
                if new != letter.outcome:
                    rows.append((letter.facts.id, *new))
            changed = store.write_outcomes(rows, now)
            _progress(job, seen=len(letters), changed=changed, after_id=letters[-1].facts.id)
        newer = _superseded(job)
        if newer:
            return newer


def _finish(job: TriageJob, *, error: str = "", superseded_by: int | None = None) -> TriageJob:
    with transaction.atomic():
        params = {**job.params, "superseded_by": superseded_by} if superseded_by else job.params
        job_finish(TriageJob, job.pk, error=error, params=params)
        job.refresh_from_db()
        if error:
            summary = f"re-classification #{job.pk} could not finish: {error}"
        else:
            summary = f"re-classification #{job.pk} finished: {job.processed} letters checked, {job.changed} changed"
            summary += f" (superseded by #{superseded_by})" if superseded_by else ""
        audit_record(
            actor="classifier",
            action=AuditAction.RECLASSIFY_FINISHED,
            obj=job,
            summary=summary[:500],
            after={"state": job.state, "processed": job.processed, "changed": job.changed, "error": error[:1000]},
        )
    return job


def reclassify_run(*, job_id: int) -> TriageJob | None:
    """Run a re-classification job (claimed with a conditional UPDATE; None when another worker
    has it). First every letter classified by a rule or by default, in id order from the job's
    checkpoint; then the letters still waiting for their first classification."""
    if not _claim(job_id):
        return None
    job = TriageJob.objects.get(pk=job_id)
    with tracing.span("classification.reclassify", {"recovery.triage_job.id": job.pk}) as span:
        job = _reclassify(job)
        span.set_attributes({"recovery.reclassify.processed": job.processed,
                             "recovery.reclassify.changed": job.changed})  # fmt: skip
    return job


def _reclassify(job: TriageJob) -> TriageJob:
    stale = timezone.now() - stale_after()
    TriageJob.objects.filter(
        kind=TriageJobKind.RECLASSIFY, state=JobState.RUNNING, pk__lt=job.pk, heartbeat_at__lt=stale
    ).update(state=JobState.FAILED, finished_at=timezone.now(), error=f"worker lost; superseded by #{job.pk}")
    try:
        if job.total is None:
            job.total = DeadLetter.objects.filter(classified_by__in=["", "rule", "default"]).count()
            TriageJob.objects.filter(pk=job.pk).update(total=job.total)
        newer = _reapply(job)
        while newer is None:
            result = letters_classify(limit=CHUNK)
            if not result.seen:
                break
            _progress(job, seen=result.seen, changed=result.classified)
            newer = _superseded(job)
    except Exception as exc:
        _finish(job, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return _finish(job, superseded_by=newer)
