"""The steps of a drill run, up to the start of its replay: queue pair ready -> injected ->
dead-lettered -> captured -> classified -> replay started. Each raises StepFailed naming the
step and why; recovery.drills.runner records the steps and their timings.

Everything goes through the domain's own services, exactly as an operator's recovery would:
capture passes (invariant 1), the classification rules, a replay plan drafted by the drill's
author, frozen, approved on the strength of the drill's standing approval (invariant 7) and
started through run_start, whose workers publish with confirmation (invariant 2).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from django.db.models import Max
from django.utils import timezone

from recovery.brokers.base import DlqAddress, Target
from recovery.drills import scenario
from recovery.drills.errors import StepFailed
from recovery.errors import BrokerError, InvalidInput, RecoveryError
from recovery.models import (
    BrokerKind,
    CaptureTrigger,
    Category,
    DeadLetter,
    Disposition,
    DrillStep,
    PlanItem,
    PlanItemState,
)

if TYPE_CHECKING:
    from recovery.drills.runner import DrillRunJob

EXPECTED = {
    scenario.TRANSIENT: (Category.TRANSIENT, Disposition.REPLAY),
    scenario.POISON: (Category.POISON, Disposition.HOLD),
}


def capture_once(job: DrillRunJob) -> None:
    """One capture pass of the drill's DLQ, run here (not enqueued). Another pass of the same
    DLQ under way (a lent, scheduled DLQ) is waited out: it captures the letters just the same."""
    from recovery.capture.services import capture_pass_request, capture_pass_run

    try:
        requested = capture_pass_request(actor="drill", dlq=job.drill.dlq, trigger=CaptureTrigger.CLI)
    except InvalidInput:
        time.sleep(1)
        return
    done = capture_pass_run(pass_id=requested.pk)
    if done is not None and done.error:
        raise RecoveryError(f"capture of {job.drill.dlq.name} failed: {done.error}")


def run_letters(job: DrillRunJob) -> tuple[dict[str, int], set[int]]:
    """This run's letters: seq -> original letter id, and the seqs of replayed copies that came back."""
    originals: dict[str, int] = {}
    returned: set[int] = set()
    rows = DeadLetter.objects.filter(dlq_id=job.drill.dlq_id, id__gt=job.run.letter_baseline).order_by("id")
    for letter_id, headers in rows.values_list("id", "headers"):
        run_id, seq, replay_id = scenario.identify(headers)
        if run_id != job.run.pk or seq is None:
            continue
        if replay_id:
            returned.add(seq)
        else:
            originals.setdefault(str(seq), letter_id)
    return originals, returned


def provision(job: DrillRunJob, detail: dict[str, Any]) -> None:
    """The queue pair and the DLQ row; leftovers of earlier runs drained from both queues."""
    from recovery.drills.provisioning import drill_provision

    created = drill_provision(job.drill)
    job.reload_drill()
    job.drain_work_queue()
    capture_once(job)
    job.run.letter_baseline = DeadLetter.objects.filter(dlq=job.drill.dlq).aggregate(m=Max("id"))["m"] or 0
    job.save("letter_baseline")
    detail.update(created=created, dlq=job.drill.dlq.name, work=job.drill.work_address)


def inject(job: DrillRunJob, detail: dict[str, Any]) -> None:
    """Publish the N synthetic messages to the work queue, each confirmed by the broker."""
    drill, kind = job.drill, job.drill.broker.kind
    target = Target(name="", routing_key=drill.work_queue) if kind == BrokerKind.RABBITMQ else Target(
        name=drill.work_address or drill.work_queue)  # fmt: skip
    messages = [scenario.message(kind, job.run.pk, seq, b) for seq, b in enumerate(job.behaviours)]
    confirmed, errors = 0, []
    for start in range(0, len(messages), 10):
        results = job.adapter.publish(target, messages[start : start + 10])
        confirmed += sum(1 for r in results if r.confirmed)
        errors += [r.error for r in results if not r.confirmed]
    job.run.injected = confirmed
    job.save("injected")
    detail.update(injected=confirmed, behaviours=job.behaviours)
    if errors:
        raise StepFailed(DrillStep.INJECTED, f"{len(errors)} of {len(messages)} not confirmed: {errors[0]}")


def _dead_lettered(job: DrillRunJob, failing: list[int]) -> int:
    if job.drill.broker.kind == BrokerKind.KAFKA:
        published = job.run.observations.get("dead_letter_published", {})
        return sum(1 for seq in failing if published.get(str(seq)))
    try:
        return job.adapter.depth(DlqAddress(name=job.drill.dlq.address, vhost=job.drill.dlq.vhost))
    except BrokerError:
        return 0  # asked again on the next round, until the deadline


def consume_failures(job: DrillRunJob, detail: dict[str, Any]) -> None:
    """The consumer processes the healthy messages and fails the others until the broker (or,
    on Kafka, the consumer) has put every failing one in the DLQ."""
    failing = [seq for seq, b in enumerate(job.behaviours) if b != scenario.OK]
    healthy = [seq for seq, b in enumerate(job.behaviours) if b == scenario.OK]
    while True:
        job.poll()
        processed = job.run.observations.get("processed", {})
        count = _dead_lettered(job, failing)
        if count >= len(failing) and all(processed.get(str(seq)) is not None for seq in healthy):
            break
        job.renew()
    job.run.dead_lettered = count
    job.run.observations["dead_lettered_at"] = timezone.now().isoformat()
    job.save("dead_lettered", "observations")
    detail.update(dead_lettered=count, processed=len(healthy))


def capture(job: DrillRunJob, detail: dict[str, Any]) -> None:
    """Capture passes until every failing message of the run is a letter in the store."""
    failing = len(job.behaviours) - job.behaviours.count(scenario.OK)
    passes = 0
    while True:
        capture_once(job)
        passes += 1
        originals, _returned = run_letters(job)
        if len(originals) >= failing:
            break
        job.renew()
    job.run.captured = len(originals)
    job.run.observations["letters"] = originals
    job.run.time_to_capture_seconds = round(job.seconds_since("dead_lettered_at"), 3)
    job.save("captured", "observations", "time_to_capture_seconds")
    detail.update(captured=len(originals), passes=passes)


def classify(job: DrillRunJob, detail: dict[str, Any]) -> None:
    """Classify the run's letters with the rules and check the expected categories: transient
    ones transient/replay, poison ones poison/hold."""
    from recovery.classification.services import letters_classify

    letters: dict[str, int] = job.run.observations["letters"]
    letters_classify(letter_ids=letters.values())
    rows = DeadLetter.objects.filter(pk__in=letters.values()).in_bulk()
    wrong = []
    for seq, letter_id in sorted(letters.items(), key=lambda item: int(item[0])):
        letter, behaviour = rows[letter_id], job.behaviours[int(seq)]
        if (letter.category, letter.disposition) != EXPECTED.get(behaviour):
            wrong.append(f"seq {seq} ({behaviour}) is {letter.category}/{letter.disposition}")
    counts = Counter(f"{letter.category}/{letter.disposition}" for letter in rows.values())
    job.run.observations["classified"] = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
    job.run.observations["classified_ok"] = not wrong
    job.save("observations")
    detail.update(categories=dict(counts))
    if wrong:
        raise StepFailed(
            DrillStep.CLASSIFIED,
            f"{'; '.join(wrong[:5])}: the shipped default rules 'Timeout' and 'Decode error' classify drill "
            "messages (install them with the default rule set, or add rules that do)",
        )


def start_replay(job: DrillRunJob) -> Any:
    """Draft the run's replay plan (author: the drill's author) from the approved template over
    this run's letters, submit it, approve it with the drill's standing approval and start it."""
    from recovery.drills.services import drill_plan_approve
    from recovery.replay import services as replay
    from recovery.triage.filters import LetterFilter
    from recovery.triage.services import plan_draft_create

    drill, run, author = job.drill, job.run, job.drill.author
    letters: dict[str, int] = run.observations["letters"]
    plan = plan_draft_create(
        actor=author,
        selection=LetterFilter(ids=tuple(sorted(letters.values()))),
        name=f"drill {drill.name} run {run.pk}",
        reason=f"recovery drill {drill.name}, run {run.pk}: drafted for its author from the approved template",
    )
    run.plan = plan
    job.save("plan")
    routing = ("", drill.work_queue) if drill.broker.kind == BrokerKind.RABBITMQ else (drill.work_address, "")
    changes = {name: getattr(drill, name) for name in ("rate_per_second", "batch_size", "workers", "verifications",
                                                         "stop_conditions")}  # fmt: skip
    changes.update(target_broker=drill.broker, target_address=routing[0], target_routing_key=routing[1])
    plan = replay.plan_update(actor=author, plan=plan, changes=changes)
    plan = replay.plan_submit(actor=author, plan=plan)
    included = set(PlanItem.objects.filter(plan=plan, state=PlanItemState.INCLUDED).values_list("letter_id", flat=True))
    transient = {letters[str(s)] for s, b in enumerate(job.behaviours) if b == scenario.TRANSIENT}
    run.replayed = len(included)
    run.observations["held"] = PlanItem.objects.filter(plan=plan, state=PlanItemState.EXCLUDED).count()
    job.save("replayed", "observations")
    if included != transient:
        raise StepFailed(DrillStep.REPLAYED, f"the plan includes {len(included)} letters, not the {len(transient)} "
                         f"transient ones (poison must be held)")  # fmt: skip
    drill_plan_approve(drill_run=run, plan=plan)
    return replay.run_start(actor="drill", plan=plan)
