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
from recovery.models import AuditEvent, Broker, BrokerKind, CaptureMode, DeadLetterQueue
from recovery.permissions import Role
from tests.recovery.audit.helpers import record_events

# Services that change state but are deliberately not audit events, and why.
EXEMPT = {
    "recovery.audit.services.audit_record": "it is the audit writer itself",
    "recovery.audit.services.audit_checkpoint_record": "the chain's own signature: an event would move its head",
    "recovery.health.services.worker_heartbeat_record": "liveness telemetry overwritten every tick, not an action",
}


def _calls(make_user: Callable[..., Any]) -> dict[str, Callable[[], Any]]:
    admin = make_user(Role.ADMIN)
    operator = make_user(Role.OPERATOR)
    target = make_user(Role.VIEWER)
    # a broker nobody listens on: capture fails fast, which is still a state change to audit
    broker = Broker.objects.create(name="down", kind=BrokerKind.KAFKA, endpoint="127.0.0.1:1")
    dlq = DeadLetterQueue.objects.create(
        broker=broker, name="down-dlq", address="t", consumer_group="g", capture_mode=CaptureMode.OFFSETS
    )

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
            actor=admin, data={"broker": broker, "name": "new-dlq", "address": "orders.DLT", "consumer_group": "c"}
        ),
        "recovery.capture.services.capture_pass_request": lambda: capture_pass_request(actor=operator, dlq=dlq),
        "recovery.capture.services.capture_due_passes_enqueue": capture_due_passes_enqueue,
        "recovery.capture.services.capture_pass_run": capture_run,
        **_triage_calls(operator, dlq),
    }


def _triage_calls(operator: Any, dlq: DeadLetterQueue) -> dict[str, Callable[[], Any]]:
    from datetime import UTC, datetime

    from recovery.inspection.services import letter_body_download
    from recovery.models import DeadLetter, FingerprintGroup
    from recovery.triage import services as triage
    from recovery.triage.filters import LetterFilter

    letter = DeadLetter.objects.create(
        dlq=dlq, identity="kafka:t/0/1", body=b"{}", body_size=2, content_hash="0" * 64, captured_at=datetime.now(UTC)
    )
    group = FingerprintGroup.objects.create(
        fingerprint="ab" * 32, letter_count=1, first_seen=letter.captured_at, last_seen=letter.captured_at
    )

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
    "recovery.triage.services.plan_draft_create",
    "recovery.triage.services.runbook_save",
    "recovery.triage.services.group_runbook_set",
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
    if service.endswith(("audit_verification_run", "capture_pass_run", "triage_bulk_run")):
        call = call()  # its set-up (the request) writes its own event first
    before = AuditEvent.objects.count()
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        call()
        raise RuntimeError("roll back")
    assert AuditEvent.objects.count() == before, "a rolled-back call must leave no audit event"
    call()
    assert AuditEvent.objects.count() == before + 1
