"""Rule writes: admins only, validated, audited in their own transaction, and each change that
can alter an outcome queues one re-classification (created before it is enqueued, on commit)."""

from __future__ import annotations

import pytest

from recovery.classification.defaults import DEFAULT_RULES
from recovery.classification.services import (
    default_rules_install,
    reclassify_request,
    rule_create,
    rule_delete,
    rule_update,
    rules_reorder,
)
from recovery.errors import InvalidInput, NotPermitted
from recovery.models import AuditAction, AuditEvent, ClassificationRule, JobState, TriageJob
from recovery.permissions import Role

pytestmark = pytest.mark.django_db

TIMEOUTS = {
    "name": "timeouts",
    "conditions": [{"field": "error_class", "op": "regex", "value": "(?i)timeout"}],
    "category": "transient",
    "disposition": "replay",
}


@pytest.fixture
def admin(make_user):
    return make_user(Role.ADMIN)


def _events(action: AuditAction) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def test_an_admin_adds_a_rule_audited_with_a_reclassification_queued_on_commit(
    admin, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        rule = rule_create(actor=admin, data=TIMEOUTS)
    assert rule.position == 10 and rule.conditions == TIMEOUTS["conditions"]
    (event,) = _events(AuditAction.RULE_CREATED)
    job = TriageJob.objects.get()
    assert event.actor_name == admin.username and event.after["reclassify_job"] == job.pk
    assert job.state == JobState.QUEUED and job.requested_by == admin
    assert len(callbacks) == 1  # the enqueue, after commit


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_only_admins_change_rules(make_user, role) -> None:
    user = make_user(role)
    with pytest.raises(NotPermitted):
        rule_create(actor=user, data=TIMEOUTS)
    rule = rule_create(actor="test", data=TIMEOUTS)
    for call in (
        lambda: rule_update(actor=user, rule=rule, data={"enabled": False}),
        lambda: rule_delete(actor=user, rule=rule),
        lambda: rules_reorder(actor=user, rule_ids=[rule.pk]),
        lambda: default_rules_install(actor=user),
        lambda: reclassify_request(actor=user),
    ):
        with pytest.raises(NotPermitted):
            call()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**TIMEOUTS, "name": " "}, "a rule needs a name"),
        ({**TIMEOUTS, "category": "spicy"}, "unknown category 'spicy'"),
        ({**TIMEOUTS, "disposition": "burn"}, "unknown disposition 'burn'"),
        (
            {**TIMEOUTS, "conditions": [{"field": "error_class", "op": "regex", "value": "(a+)+"}]},
            "condition 1 (error_class)",
        ),
        (
            {**TIMEOUTS, "conditions": [{"field": "dlq", "op": "in", "value": [987654]}]},
            "no dead-letter queue with id 987654",
        ),
        ({**TIMEOUTS, "runbook": 987654}, "no runbook with id 987654"),
    ],
)
def test_bad_rules_are_refused_with_a_clear_error_and_nothing_written(admin, data, message) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        rule_create(actor=admin, data=data)
    assert not ClassificationRule.objects.exists() and not AuditEvent.objects.exists()


def test_names_are_unique(admin) -> None:
    rule_create(actor=admin, data=TIMEOUTS)
    with pytest.raises(InvalidInput, match="exists already"):
        rule_create(actor=admin, data=TIMEOUTS)


def test_an_update_audits_before_and_after_and_only_outcome_changes_reclassify(admin) -> None:
    rule = rule_create(actor=admin, data=TIMEOUTS)
    TriageJob.objects.update(state=JobState.SUCCEEDED)
    rule_update(actor=admin, rule=rule, data={"description": "read and connect timeouts"})
    assert TriageJob.objects.filter(state=JobState.QUEUED).count() == 0
    rule_update(actor=admin, rule=rule, data={"disposition": "hold"})
    assert TriageJob.objects.filter(state=JobState.QUEUED).count() == 1
    first, second = _events(AuditAction.RULE_UPDATED)
    assert first.before["description"] == "" and first.after["description"] == "read and connect timeouts"
    assert second.before["disposition"] == "replay" and second.after["disposition"] == "hold"
    assert "disposition" in second.summary


def test_an_update_that_changes_nothing_writes_nothing(admin) -> None:
    rule = rule_create(actor=admin, data=TIMEOUTS)
    before = AuditEvent.objects.count()
    rule_update(actor=admin, rule=rule, data={"name": "timeouts", "enabled": True})
    assert AuditEvent.objects.count() == before


def test_changes_while_a_reclassification_is_queued_share_it(admin) -> None:
    rule = rule_create(actor=admin, data=TIMEOUTS)
    rule_update(actor=admin, rule=rule, data={"enabled": False})
    rule_delete(actor=admin, rule=rule)
    assert TriageJob.objects.count() == 1


def test_delete_is_audited_with_the_rule_as_it_was(admin) -> None:
    rule = rule_create(actor=admin, data=TIMEOUTS)
    rule_delete(actor=admin, rule=rule)
    (event,) = _events(AuditAction.RULE_DELETED)
    assert event.object_id == str(rule.pk) and event.before["name"] == "timeouts"
    assert not ClassificationRule.objects.exists()


def test_reorder_sets_every_position_and_refuses_a_stale_list(admin) -> None:
    a = rule_create(actor=admin, data={**TIMEOUTS, "name": "a"})
    b = rule_create(actor=admin, data={**TIMEOUTS, "name": "b"})
    c = rule_create(actor=admin, data={**TIMEOUTS, "name": "c"})
    rules_reorder(actor=admin, rule_ids=[c.pk, a.pk, b.pk])
    assert list(ClassificationRule.objects.values_list("name", "position")) == [("c", 10), ("a", 20), ("b", 30)]
    (event,) = _events(AuditAction.RULES_REORDERED)
    assert event.before["order"] == ["a", "b", "c"] and event.after["order"] == ["c", "a", "b"]
    for stale in ([a.pk, b.pk], [a.pk, a.pk, b.pk], [a.pk, b.pk, c.pk, 999]):
        with pytest.raises(InvalidInput, match="changed meanwhile"):
            rules_reorder(actor=admin, rule_ids=stale)
    rules_reorder(actor=admin, rule_ids=[c.pk, a.pk, b.pk])  # same order: nothing to do
    assert len(_events(AuditAction.RULES_REORDERED)) == 1


def test_the_default_rules_install_once_after_existing_rules(admin) -> None:
    mine = rule_create(actor=admin, data=TIMEOUTS)
    installed = default_rules_install(actor="seed_demo")
    assert [r.name for r in installed] == [spec["name"] for spec in DEFAULT_RULES]
    assert all(r.shipped and r.position > mine.position for r in installed)
    assert default_rules_install(actor="seed_demo") == []
    assert len(_events(AuditAction.RULES_SEEDED)) == 1
    ClassificationRule.objects.filter(name=DEFAULT_RULES[0]["name"]).delete()
    assert [r.name for r in default_rules_install(actor=admin)] == [DEFAULT_RULES[0]["name"]]


def test_reclassify_request_is_refused_while_one_is_queued(admin) -> None:
    job = reclassify_request(actor=admin)
    assert _events(AuditAction.RECLASSIFY_REQUESTED)[0].object_id == str(job.pk)
    with pytest.raises(InvalidInput, match=f"already queued \\(#{job.pk}\\)"):
        reclassify_request(actor=admin)
