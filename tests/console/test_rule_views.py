"""The rule editor: everyone reads the list, only admins change rules (checked server-side),
every change is a POST with CSRF, the preview answers before saving, bad input gets a clear
error naming the condition."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from recovery.models import (
    AuditAction,
    AuditEvent,
    ClassificationRule,
    TriageJob,
)
from recovery.permissions import Role
from tests.factories import ClassificationRuleFactory, DeadLetterFactory

pytestmark = pytest.mark.django_db

NOT_ADMIN = [Role.VIEWER, Role.OPERATOR, Role.APPROVER]


@pytest.fixture
def rule() -> ClassificationRule:
    return ClassificationRuleFactory(
        name="timeouts", position=10, category="transient", disposition="replay",
        conditions=[{"field": "error_class", "op": "regex", "value": "(?i)timeout"}],
    )  # fmt: skip


def _rows(*rows: tuple[str, str, str, str]) -> dict[str, list[str]]:
    return {key: [row[i] for row in rows] for i, key in enumerate(("cond_field", "cond_op", "cond_name", "cond_value"))}


RULE_FORM = {"name": "connection", "enabled": "on", "category": "transient", "disposition": "replay"}


@pytest.mark.parametrize("role", list(Role))
def test_everyone_reads_the_list_but_only_admins_see_actions(client_for, rule, role) -> None:
    response = client_for(role).get(reverse("rules"))
    html = response.content.decode()
    assert response.status_code == 200 and "timeouts" in html and "error class matches regex (?i)timeout" in html
    assert (reverse("rule-move", args=[rule.pk]) in html) is (role == Role.ADMIN)
    assert ("Install default rules" in html) is (role == Role.ADMIN)
    assert client_for(role).get(reverse("rules-progress")).status_code == 200


@pytest.mark.parametrize("role", NOT_ADMIN)
def test_others_are_refused_every_edit_server_side(client_for, rule, role) -> None:
    client = client_for(role)
    events = AuditEvent.objects.count()
    assert client.get(reverse("rule-new")).status_code == 403
    assert client.get(reverse("rule-edit", args=[rule.pk])).status_code == 403
    assert client.get(reverse("rule-condition-row")).status_code == 403
    for name, args in [("rule-new", []), ("rule-edit", [rule.pk]), ("rule-move", [rule.pk]), ("rule-toggle", [rule.pk]),
                       ("rule-delete", [rule.pk]), ("rule-preview", []), ("rules-install-defaults", []),
                       ("rules-reclassify", [])]:  # fmt: skip
        assert client.post(reverse(name, args=args), {**RULE_FORM, "direction": "up"}).status_code == 403, name
    rule.refresh_from_db()
    assert rule.enabled and ClassificationRule.objects.count() == 1 and AuditEvent.objects.count() == events


def test_mutating_endpoints_refuse_get(client_for, rule) -> None:
    client = client_for(Role.ADMIN)
    for name, args in [("rule-move", [rule.pk]), ("rule-toggle", [rule.pk]), ("rule-delete", [rule.pk]),
                       ("rule-preview", []), ("rules-install-defaults", []), ("rules-reclassify", [])]:  # fmt: skip
        assert client.get(reverse(name, args=args)).status_code == 405, name
    assert ClassificationRule.objects.get().enabled


def test_posts_need_the_csrf_token(make_user, rule) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(Role.ADMIN))
    assert client.post(reverse("rule-toggle", args=[rule.pk])).status_code == 403
    assert ClassificationRule.objects.get().enabled


def test_an_admin_creates_a_rule_from_condition_rows(client_for, dlq) -> None:
    data = {
        **RULE_FORM,
        **_rows(
            ("error_message", "regex", "", "(?i)connection (refused|reset)"),
            ("dlq", "in", "", "orders-dlt"),
            ("header", "exists", "x-tenant", ""),
            ("body_json", "eq", "$.order.state", "42"),
            ("age", "older_than", "first_failed_at", "60"),
            ("", "eq", "", ""),  # a blank row is skipped
        ),
    }
    response = client_for(Role.ADMIN).post(reverse("rule-new"), data)
    assert response.status_code == 302 and response["Location"] == reverse("rules")
    rule = ClassificationRule.objects.get(name="connection")
    assert rule.conditions == [
        {"field": "error_message", "op": "regex", "value": "(?i)connection (refused|reset)"},
        {"field": "dlq", "op": "in", "value": [dlq.pk]},
        {"field": "header", "op": "exists", "name": "x-tenant"},
        {"field": "body_json", "op": "eq", "path": "$.order.state", "value": 42},
        {"field": "age", "op": "older_than", "value": 60, "since": "first_failed_at"},
    ]
    assert AuditEvent.objects.filter(action=AuditAction.RULE_CREATED).count() == 1
    assert TriageJob.objects.count() == 1
    # and the editor shows them back as rows
    html = client_for(Role.ADMIN).get(reverse("rule-edit", args=[rule.pk])).content.decode()
    assert 'value="orders-dlt"' in html and 'value="$.order.state"' in html and 'value="first_failed_at"' in html


def test_the_json_fallback_replaces_the_rows(client_for) -> None:
    data = {**RULE_FORM, **_rows(("origin", "eq", "", "ignored")),
            "conditions_json": '[{"field": "attempt_count", "op": ">=", "value": 5}]'}  # fmt: skip
    assert client_for(Role.ADMIN).post(reverse("rule-new"), data).status_code == 302
    assert ClassificationRule.objects.get().conditions == [{"field": "attempt_count", "op": "gte", "value": 5}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_rows(("error_class", "regex", "", "(a+)+")), "condition 1 (error_class): a repetition inside a repetition"),
        (_rows(("origin", "eq", "", "x"), ("header", "eq", "", "v")), "condition 2 (header): &#x27;name&#x27; must be"),
        (_rows(("dlq", "in", "", "nowhere")), "condition 1 (dlq): no dead-letter queue named &#x27;nowhere&#x27;"),
        (_rows(("attempt_count", "gte", "", "many")), "condition 1 (attempt_count): &#x27;value&#x27; must be"),
        (_rows(("origin", "older_than", "", "x")), "condition 1 (origin): unknown op"),
        ({"conditions_json": "[{"}, "conditions JSON: Expecting"),
        ({"conditions_json": '{"field": "origin"}'}, "conditions must be a list"),
    ],
)
def test_bad_conditions_come_back_with_a_clear_error(client_for, data, message) -> None:
    response = client_for(Role.ADMIN).post(reverse("rule-new"), {**RULE_FORM, **data})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ClassificationRule.objects.exists()


def test_a_refused_form_keeps_the_rows_as_typed(client_for) -> None:
    data = {**RULE_FORM, **_rows(("error_class", "regex", "", "(a+)+"))}
    html = client_for(Role.ADMIN).post(reverse("rule-new"), data).content.decode()
    assert 'value="(a+)+"' in html


def test_preview_counts_and_samples_before_saving(client_for, dlq) -> None:
    hits = [DeadLetterFactory(dlq=dlq, error_class="java.net.SocketTimeoutException") for _ in range(2)]
    DeadLetterFactory(dlq=dlq, error_class="KeyError")
    data = _rows(("error_class", "regex", "", "(?i)timeout"))
    response = client_for(Role.ADMIN).post(reverse("rule-preview"), data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<strong>2</strong> of the 3 letters match" in html
    for letter in hits:
        assert reverse("letter-detail", args=[letter.pk]) in html
    assert not ClassificationRule.objects.exists()


def test_preview_shows_bad_input_as_an_error(client_for) -> None:
    html = client_for(Role.ADMIN).post(reverse("rule-preview"), _rows(("body_json", "eq", "a.b", "1"))).content.decode()
    assert "condition 1 (body_json): a path starts with $" in html


def test_move_toggle_delete_install_and_reclassify(client_for, rule) -> None:
    client = client_for(Role.ADMIN)
    other = ClassificationRuleFactory(name="other", position=20, category="poison")
    assert client.post(reverse("rule-move", args=[other.pk]), {"direction": "up"}).status_code == 302
    assert list(ClassificationRule.objects.values_list("name", flat=True)) == ["other", "timeouts"]
    client.post(reverse("rule-toggle", args=[rule.pk]))
    assert not ClassificationRule.objects.get(pk=rule.pk).enabled
    client.post(reverse("rule-delete", args=[other.pk]))
    assert not ClassificationRule.objects.filter(pk=other.pk).exists()
    client.post(reverse("rules-install-defaults"))
    assert ClassificationRule.objects.filter(shipped=True).count() > 10
    TriageJob.objects.update(state="succeeded")
    response = client.post(reverse("rules-reclassify"), follow=True)
    assert "Re-classification #" in response.content.decode()
    assert TriageJob.objects.filter(state="queued").count() == 1
    html = client.get(reverse("rules-progress")).content.decode()
    assert 'hx-trigger="every 2s"' in html and "Queued" in html


def test_names_and_conditions_are_escaped(client_for) -> None:
    ClassificationRuleFactory(
        name="<script>alert(1)</script>", conditions=[{"field": "origin", "op": "eq", "value": "<script>x</script>"}]
    )
    html = client_for(Role.VIEWER).get(reverse("rules")).content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
