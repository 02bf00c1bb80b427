"""The plan page says where each target came from (invariant 14) before and after submit, marks
targets taken from message headers, and asks the cluster who reads a Kafka target without ever
failing the page when the cluster does not answer."""

from __future__ import annotations

import pytest
from django.urls import reverse

from recovery.models import PlanItem, TargetSource
from recovery.permissions import Role
from recovery.replay import freeze, services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db


def _letters(dlq) -> None:
    recorded = {"replay_origin": "kafka:orders", "replay_origin_source": "framework", "consumer_group": "orders-svc"}
    DeadLetterFactory.create_batch(2, dlq=dlq, replayable=True, failure_extras=recorded)
    DeadLetterFactory(
        dlq=dlq, replayable=True, origin="kafka:payments",
        failure_extras={"replay_origin": "kafka:payments", "replay_origin_source": "headers"},
    )  # fmt: skip
    DeadLetterFactory(dlq=dlq, replayable=True)  # captured before sources were recorded


def test_the_dry_run_and_the_frozen_plan_say_where_each_target_came_from(dlq, make_user, client_for) -> None:
    _letters(dlq)
    author = make_user(Role.OPERATOR)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="replay")
    client = client_for(Role.VIEWER)

    html = client.get(reverse("plan-detail", args=[plan.pk])).content.decode()
    broker = dlq.broker.name
    source = '<span class="{}" data-testid="target-source">({})'
    assert f"<code>{broker}: orders</code>: 2 {source.format('muted', 'framework record')}" in html
    assert f"<code>{broker}: payments</code>: 1 {source.format('error', 'from message headers')}" in html
    assert "(failure origin (captured before sources were recorded))" in html

    plan = services.plan_submit(actor=author, plan=plan)
    sources = sorted(PlanItem.objects.filter(plan=plan).values_list("target_source", flat=True))
    assert sources == sorted([TargetSource.FRAMEWORK] * 2 + [TargetSource.HEADERS, TargetSource.ORIGIN])
    html = client.get(reverse("plan-detail", args=[plan.pk])).content.decode()
    assert "2 framework record" in html and "1 from message headers" in html


def test_the_readers_of_a_kafka_target_are_reported_even_when_the_cluster_is_down(dlq, make_user, client_for) -> None:
    _letters(dlq)
    author = make_user(Role.OPERATOR)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="replay")

    response = client_for(Role.VIEWER).get(reverse("plan-readers", args=[plan.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('data-testid="kafka-readers"') == 2  # orders and payments
    assert '<code data-testid="recorded-group">orders-svc</code>' in html
    assert "could not ask the cluster which consumer groups read orders" in html


def test_a_header_cannot_forge_a_broker_record_through_the_route_separator(dlq, make_user) -> None:
    forged = "kafka:orders\x1fkafka:elsewhere\x1fbroker"
    DeadLetterFactory(
        dlq=dlq, replayable=True, origin=forged,
        failure_extras={"replay_origin": forged, "replay_origin_source": "headers"},
    )  # fmt: skip
    author = make_user(Role.OPERATOR)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="replay")

    dry = freeze.dry_run(plan)

    assert dict(dry.target_sources) == {(f"{dlq.broker.name}: orderskafka:elsewherebroker", "from message headers"): 1}
