"""Every service that changes state writes exactly one audit event, in its own transaction: a
rolled-back call leaves none. The test walks every recovery/*/services.py module, so a new
service without an entry here fails until it is audited (or its exemption is argued below)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

import recovery
from recovery.accounts.services import demo_users_ensure, user_roles_set
from recovery.audit.export import AuditFilters
from recovery.audit.services import audit_export_start, audit_verification_request, audit_verification_run
from recovery.brokers.services import broker_save, dlq_save, local_brokers_configure
from recovery.capture.services import capture_due_passes_enqueue, capture_pass_request, capture_pass_run
from recovery.models import AuditEvent, DeadLetterQueue
from recovery.permissions import Role
from tests.factories import (
    ClassificationRuleFactory,
    DeadLetterFactory,
    DeadLetterQueueFactory,
    DrillRunFactory,
    FingerprintGroupFactory,
    ReplayPlanFactory,
    ReplayRunFactory,
)
from tests.recovery.audit.helpers import record_events

# Services that change state but are deliberately not audit events, and why.
EXEMPT = {
    "recovery.audit.services.audit_record": "it is the audit writer itself",
    "recovery.audit.services.audit_checkpoint_record": "the chain's own signature: an event would move its head",
    "recovery.health.services.worker_heartbeat_record": "liveness telemetry overwritten every tick, not an action",
    "recovery.classification.services.letters_classify": (
        "machine work run after every capture batch, part of the capture pass its CAPTURE_FINISHED event records; "
        "per-batch events would flood the trail. Whatever changes how letters are classified (rules, "
        "re-classification, triage) is audited"
    ),
    "recovery.classification.services.dlq_classify_pending": "the classify job: letters_classify until none is left",
}


def _calls(make_user: Callable[..., Any]) -> dict[str, Callable[[], Any]]:
    admin = make_user(Role.ADMIN)
    operator = make_user(Role.OPERATOR)
    target = make_user(Role.VIEWER)
    # a broker nobody listens on: capture fails fast, which is still a state change to audit
    dlq = DeadLetterQueueFactory()

    def capture_run() -> Any:
        with transaction.atomic():
            requested = capture_pass_request(actor=operator, dlq=dlq)
        return lambda: capture_pass_run(pass_id=requested.pk)

    def verification_run() -> Any:
        with transaction.atomic():
            verification = audit_verification_request(actor=admin)
        return lambda: audit_verification_run(verification_id=verification.pk)

    return {
        "recovery.accounts.services.user_roles_set": lambda: user_roles_set(
            actor=admin, user=target, roles=["operator"]
        ),
        "recovery.accounts.services.demo_users_ensure": demo_users_ensure,
        "recovery.brokers.services.local_brokers_configure": local_brokers_configure,
        "recovery.audit.services.audit_verification_request": lambda: audit_verification_request(actor=admin),
        "recovery.audit.services.audit_verification_run": verification_run,
        "recovery.audit.services.audit_export_start": lambda: audit_export_start(
            actor=admin, filters=AuditFilters(), fmt="jsonl"
        ),
        "recovery.brokers.services.broker_save": lambda: broker_save(
            actor=admin, data={"name": "new-broker", "kind": "kafka", "endpoint": "127.0.0.1:9"}
        ),
        "recovery.brokers.services.dlq_save": lambda: dlq_save(
            actor=admin, data={"broker": dlq.broker, "name": "new-dlq", "address": "orders.DLT", "consumer_group": "c"}
        ),
        "recovery.capture.services.capture_pass_request": lambda: capture_pass_request(actor=operator, dlq=dlq),
        "recovery.capture.services.capture_due_passes_enqueue": capture_due_passes_enqueue,
        "recovery.capture.services.capture_pass_run": capture_run,
        **_triage_calls(operator, dlq),
        **_classification_calls(admin),
        **_replay_calls(admin, operator, make_user(Role.APPROVER), dlq),
        **_drill_calls(operator, make_user(Role.APPROVER), dlq),
    }


def _drill_calls(operator: Any, approver: Any, dlq: DeadLetterQueue) -> dict[str, Callable[[], Any]]:
    """Drills in each state, built through their services (their own events are not what is counted)."""
    from datetime import UTC, datetime, timedelta

    from recovery.drills import services as drills
    from recovery.models import Drill
    from recovery.replay import freeze
    from recovery.replay.selectors import plan_content_hash

    def drill(name: str, *, approved: bool = True) -> Drill:
        made = drills.drill_create(actor=operator, data={"name": name, "broker": dlq.broker, "schedule": "@daily"})
        if approved:
            drills.drill_approve(actor=approver, drill=made)
        return made

    unapproved, to_run, due, with_run = drill("unapproved", approved=False), drill("to-run"), drill("due"), drill("run")
    Drill.objects.filter(pk=due.pk).update(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
    Drill.objects.filter(pk=with_run.pk).update(dlq=dlq)
    letter = DeadLetterFactory(dlq=dlq, disposition="replay", category="transient")
    run = DrillRunFactory(
        drill=with_run, state="running", drill_hash=with_run.content_hash, observations={"letters": {"0": letter.pk}}
    )
    plan = ReplayPlanFactory(
        name="drill plan", author=operator, selection={"ids": [letter.pk]}, target_broker=dlq.broker,
        target_address=with_run.work_queue, rate_per_second=with_run.rate_per_second, batch_size=with_run.batch_size,
    )  # fmt: skip
    freeze.freeze(plan)
    plan.state, plan.content_hash = "submitted", plan_content_hash(plan)
    plan.save()
    return {
        "recovery.drills.services.drill_create": lambda: drills.drill_create(
            actor=operator, data={"name": "new-drill", "broker": dlq.broker, "schedule": "*/5 * * * *"}
        ),
        "recovery.drills.services.drill_update": lambda: drills.drill_update(
            actor=operator, drill=unapproved, changes={"message_count": 9}
        ),
        "recovery.drills.services.drill_approve": lambda: drills.drill_approve(actor=approver, drill=unapproved),
        "recovery.drills.services.drill_run_now": lambda: drills.drill_run_now(actor=operator, drill=to_run),
        "recovery.drills.services.drill_schedule_due": drills.drill_schedule_due,
        "recovery.drills.services.drill_plan_approve": lambda: drills.drill_plan_approve(drill_run=run, plan=plan),
    }


def _replay_calls(admin: Any, operator: Any, approver: Any, dlq: DeadLetterQueue) -> dict[str, Callable[[], Any]]:
    """Plans in each state, built with the ORM (their own events are not what is counted)."""
    from recovery.models import PlanApproval, PreconditionOverride, ReplayPlan, RunState
    from recovery.replay import freeze
    from recovery.replay import services as replay
    from recovery.replay.selectors import plan_content_hash

    letters = DeadLetterFactory.create_batch(
        2, dlq=dlq, origin="kafka:orders", disposition="replay", category="transient"
    )

    def plan(state: str) -> ReplayPlan:
        letter = letters[0] if state == "draft" else letters[1]  # the draft's letter is in no other plan
        made = ReplayPlanFactory(name=f"p-{state}", author=operator, selection={"ids": [letter.pk]})
        if state != "draft":
            freeze.freeze(made)
            made.state, made.content_hash = state, plan_content_hash(made)
            made.save()
        return made

    draft, submitted, approved = plan("draft"), plan("submitted"), plan("approved")
    PlanApproval.objects.create(
        plan=approved, approver=approver, decision="approve", content_hash=approved.content_hash
    )
    # the broker is down: an admin's override lets the start go ahead
    PreconditionOverride.objects.create(
        plan=approved, check_name="target_reachable", reason="audit test", admin=admin,
        content_hash=approved.content_hash,
    )  # fmt: skip
    running = ReplayRunFactory(plan=plan("running"), state=RunState.RUNNING)
    paused = ReplayRunFactory(plan=plan("running"), state=RunState.PAUSED, control="pause")
    blocked = _blocked_run(operator)
    return {
        "recovery.replay.services.plan_update": lambda: replay.plan_update(
            actor=operator, plan=draft, changes={"rate_per_second": 20}
        ),
        "recovery.replay.services.plan_submit": lambda: replay.plan_submit(actor=operator, plan=draft),
        "recovery.replay.services.plan_approve": lambda: replay.plan_approve(actor=approver, plan=submitted),
        "recovery.replay.services.plan_reject": lambda: replay.plan_reject(
            actor=approver, plan=submitted, comment="wrong target for these"
        ),
        "recovery.replay.services.precondition_override": lambda: replay.precondition_override(
            actor=admin, plan=submitted, check="time_window", reason="an agreed maintenance window"
        ),
        "recovery.replay.services.plan_cancel": lambda: replay.plan_cancel(actor=operator, plan=draft),
        "recovery.replay.services.run_start": lambda: replay.run_start(actor=operator, plan=approved),
        "recovery.replay.services.run_pause": lambda: replay.run_pause(actor=operator, run=running),
        "recovery.replay.services.run_resume": lambda: replay.run_resume(actor=operator, run=paused),
        "recovery.replay.services.run_abort": lambda: replay.run_abort(actor=operator, run=running),
        "recovery.replay.services.run_release_blocked": lambda: replay.run_release_blocked(
            actor=operator, run=blocked, reason="its letter 1 is obsolete"
        ),
    }


def _blocked_run(operator: Any) -> Any:
    """A paused run whose ordered group waits behind its first letter, which failed."""
    from datetime import UTC, datetime

    from recovery.models import ORDER_HELD, AttemptState, RunState
    from tests.factories import LedgerEntryFactory, PlanItemFactory

    run = ReplayRunFactory(plan=ReplayPlanFactory(author=operator), state=RunState.PAUSED, control="pause")
    first, second = (
        PlanItemFactory(plan=run.plan, ordering_group="sqs-fifo:audit", ordering_position=n) for n in (1, 2)
    )
    LedgerEntryFactory(run=run, item=first, state=AttemptState.FAILED, attempts=3)
    LedgerEntryFactory(run=run, item=second, lease_owner=ORDER_HELD, lease_expires_at=datetime(9999, 1, 1, tzinfo=UTC))
    return run


def _classification_calls(admin: Any) -> dict[str, Callable[[], Any]]:
    from recovery.classification import services as classification
    from recovery.models import ClassificationRule

    rule = {"conditions": [], "category": "transient", "disposition": "replay"}
    changed = ClassificationRuleFactory(name="to change", **rule)
    deleted = ClassificationRuleFactory(name="to delete", **rule)

    def reorder() -> Any:
        ids = list(ClassificationRule.objects.order_by("position", "id").values_list("pk", flat=True))
        return classification.rules_reorder(actor=admin, rule_ids=ids[::-1])

    def reclassify_run() -> Any:
        with transaction.atomic():
            job = classification.reclassify_request(actor=admin)
        return lambda: classification.reclassify_run(job_id=job.pk)

    return {
        "recovery.classification.services.rule_create": lambda: classification.rule_create(
            actor=admin, data={"name": "new rule", **rule}
        ),
        "recovery.classification.services.rule_update": lambda: classification.rule_update(
            actor=admin, rule=changed, data={"enabled": False}
        ),
        "recovery.classification.services.rule_delete": lambda: classification.rule_delete(actor=admin, rule=deleted),
        "recovery.classification.services.rules_reorder": reorder,
        "recovery.classification.services.default_rules_install": lambda: classification.default_rules_install(
            actor=admin
        ),
        "recovery.classification.services.reclassify_request": lambda: classification.reclassify_request(actor=admin),
        "recovery.classification.services.reclassify_run": reclassify_run,
    }


def _triage_calls(operator: Any, dlq: DeadLetterQueue) -> dict[str, Callable[[], Any]]:
    from recovery.inspection.services import letter_body_download
    from recovery.triage import services as triage
    from recovery.triage.filters import LetterFilter

    letter = DeadLetterFactory(dlq=dlq)
    group = FingerprintGroupFactory(letter_count=1, first_seen=letter.captured_at)

    def bulk_run() -> Any:
        with transaction.atomic():
            action = triage.letters_triage(actor=operator, selection=LetterFilter(), kind="hold")
        return lambda: triage.triage_bulk_run(job_id=action.job_id)

    return {
        "recovery.triage.services.letters_triage": lambda: triage.letters_triage(
            actor=operator, selection=LetterFilter(ids=(letter.pk,)), kind="hold"
        ),
        "recovery.triage.services.triage_bulk_run": bulk_run,
        "recovery.inspection.services.letter_body_download": lambda: letter_body_download(
            actor=operator, letter=letter
        ),
        "recovery.triage.services.plan_draft_create": lambda: triage.plan_draft_create(
            actor=operator, selection=LetterFilter(), name="plan"
        ),
        "recovery.triage.services.runbook_save": lambda: triage.runbook_save(actor=operator, title="runbook"),
        "recovery.triage.services.group_runbook_set": lambda: triage.group_runbook_set(
            actor=operator, group=group, runbook=None
        ),
    }


AUDITED = [
    "recovery.accounts.services.user_roles_set",
    "recovery.accounts.services.demo_users_ensure",
    "recovery.brokers.services.local_brokers_configure",
    "recovery.audit.services.audit_verification_request",
    "recovery.audit.services.audit_verification_run",
    "recovery.audit.services.audit_export_start",
    "recovery.brokers.services.broker_save",
    "recovery.brokers.services.dlq_save",
    "recovery.capture.services.capture_pass_request",
    "recovery.capture.services.capture_due_passes_enqueue",
    "recovery.capture.services.capture_pass_run",
    "recovery.triage.services.letters_triage",
    "recovery.triage.services.triage_bulk_run",
    "recovery.inspection.services.letter_body_download",
    "recovery.replay.services.plan_update",
    "recovery.replay.services.plan_submit",
    "recovery.replay.services.plan_approve",
    "recovery.replay.services.plan_reject",
    "recovery.replay.services.precondition_override",
    "recovery.replay.services.plan_cancel",
    "recovery.replay.services.run_start",
    "recovery.replay.services.run_pause",
    "recovery.replay.services.run_resume",
    "recovery.replay.services.run_abort",
    "recovery.replay.services.run_release_blocked",
    "recovery.triage.services.plan_draft_create",
    "recovery.triage.services.runbook_save",
    "recovery.triage.services.group_runbook_set",
    "recovery.classification.services.rule_create",
    "recovery.classification.services.rule_update",
    "recovery.classification.services.rule_delete",
    "recovery.classification.services.rules_reorder",
    "recovery.classification.services.default_rules_install",
    "recovery.classification.services.reclassify_request",
    "recovery.classification.services.reclassify_run",
    "recovery.drills.services.drill_create",
    "recovery.drills.services.drill_update",
    "recovery.drills.services.drill_approve",
    "recovery.drills.services.drill_run_now",
    "recovery.drills.services.drill_schedule_due",
    "recovery.drills.services.drill_plan_approve",
]


def _discovered_services() -> set[str]:
    names = set()
    for module_info in pkgutil.walk_packages(recovery.__path__, "recovery."):
        if not module_info.name.endswith(".services"):
            continue
        module = importlib.import_module(module_info.name)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ == module.__name__ and not name.startswith("_"):
                names.add(f"{module.__name__}.{name}")
    return names


@pytest.mark.django_db
def test_every_service_is_either_audited_or_exempt_with_a_reason(make_user) -> None:
    discovered = _discovered_services()
    assert set(_calls(make_user)) == set(AUDITED)
    covered = set(AUDITED) | set(EXEMPT)
    assert discovered - covered == set(), "new services must write an audit event (and be listed here)"
    assert covered - discovered == set(), "listed services that no longer exist"


@pytest.mark.django_db
@pytest.mark.parametrize("service", AUDITED)
def test_a_service_writes_exactly_one_event_and_none_when_rolled_back(make_user, settings, service: str) -> None:
    settings.RECOVERY_CAPTURE_RETRY_ATTEMPTS = 1
    record_events(1)  # a non-empty chain, so verification and export have something to work on
    call = _calls(make_user)[service]
    if service.endswith(("audit_verification_run", "capture_pass_run", "triage_bulk_run", "reclassify_run")):
        call = call()  # its set-up (the request) writes its own event first
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        call()
        raise RuntimeError("roll back")
    assert AuditEvent.objects.count() == before, "a rolled-back call must leave no audit event"
    call()
    assert AuditEvent.objects.count() == before + 1
