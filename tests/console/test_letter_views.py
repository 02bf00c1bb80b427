"""Dead-letter screens and broker/DLQ administration: roles, validation, and hostile letters
rendered safely (invariant 10)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from recovery.models import Broker, BrokerKind, DeadLetterQueue, DeadLetterState
from recovery.permissions import Role
from tests.factories import BrokerFactory, DeadLetterFactory

pytestmark = pytest.mark.django_db


SCRIPT = "<script>alert(1)</script>"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (json.dumps({"note": SCRIPT}).encode(), "json"),
        (SCRIPT.encode() + b" plain text", "text"),
        (b"\xff\xfe\x00\x01" + SCRIPT.encode(), "binary"),
        (("[" * 10_000 + "]" * 10_000).encode(), "text"),  # 10,000-deep JSON: too deep to parse
    ],
    ids=["json", "text", "binary", "deep-json"],
)
def test_hostile_letters_render_escaped(client_for, dlq, body: bytes, kind: str) -> None:
    letter = DeadLetterFactory(
        dlq=dlq, body=body, headers={"x-note": SCRIPT, SCRIPT: {"$base64": "//4="}}, error_message=SCRIPT, origin=SCRIPT
    )
    response = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert SCRIPT not in html and "&lt;script&gt;" in html
    assert f"Shown as {kind}" in html


def test_a_large_body_is_truncated_with_a_download_link(client_for, dlq) -> None:
    body = b"x" * (10 * 1024 * 1024)
    letter = DeadLetterFactory(dlq=dlq, body=body)
    client = client_for(Role.VIEWER)
    html = client.get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "truncated" in html and len(html) < 200_000
    download = client.get(reverse("letter-body", args=[letter.pk]))
    assert download["Content-Disposition"].startswith("attachment")
    assert download["Content-Type"] == "application/octet-stream"
    assert len(download.content) == len(body)


def test_an_oversize_letter_says_it_stayed_on_the_broker(client_for, dlq) -> None:
    letter = DeadLetterFactory(dlq=dlq, body=b"", body_size=20 * 1024 * 1024, state=DeadLetterState.OVERSIZE)
    html = client_for(Role.VIEWER).get(reverse("letter-detail", args=[letter.pk])).content.decode()
    assert "stays on the broker" in html


def test_the_overview_counts_dlqs_and_the_letters_page_shows_their_failure(client_for, dlq) -> None:
    DeadLetterFactory(dlq=dlq, origin="kafka:orders", error_class="java.net.SocketTimeoutException")
    client = client_for(Role.VIEWER)
    html = client.get(reverse("overview")).content.decode()
    assert 'data-dlq="orders-dlt"' in html and 'data-count="1"' in html
    html = client.get(reverse("dead-letters")).content.decode()
    assert "java.net.SocketTimeoutException" in html and "kafka:orders" in html


def test_capture_now_is_for_operators_and_post_only(client_for, dlq) -> None:
    url = reverse("capture-now", args=[dlq.pk])
    assert client_for(Role.VIEWER).post(url).status_code == 403
    assert client_for(Role.APPROVER).post(url).status_code == 403
    operator = client_for(Role.OPERATOR)
    assert operator.get(url).status_code == 405
    assert operator.post(url).status_code == 302
    assert dlq.passes.count() == 1
    again = operator.post(url, follow=True).content.decode()
    assert "already queued or running" in again
    assert b"Capture now</button>" not in client_for(Role.VIEWER).get(reverse("dlq-detail", args=[dlq.pk])).content


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_only_admins_manage_brokers_and_dlqs(client_for, dlq, role) -> None:
    client = client_for(role)
    assert client.get(reverse("broker-new")).status_code == 403
    assert client.post(reverse("broker-new"), {"name": "x", "kind": "kafka"}).status_code == 403
    assert client.post(reverse("broker-test", args=[dlq.broker.pk])).status_code == 403
    assert client.get(reverse("dlq-edit", args=[dlq.pk])).status_code == 403
    assert not Broker.objects.filter(name="x").exists()


def test_an_admin_adds_a_broker_and_secrets_are_refused(client_for) -> None:
    client = client_for(Role.ADMIN)
    refused = client.post(
        reverse("broker-new"),
        {"name": "prod-rabbit", "kind": "rabbitmq", "endpoint": "amqp://h/%2F", "credentials_ref": "hunter2",
         "options": "{}"},
    )  # fmt: skip
    assert refused.status_code == 200 and "Give a reference, not a secret" in refused.content.decode()
    refused = client.post(
        reverse("broker-new"),
        {"name": "prod-rabbit", "kind": "rabbitmq", "endpoint": "amqp://h/%2F", "options": '{"password": "x"}'},
    )
    assert "options hold no secrets" in refused.content.decode()
    saved = client.post(
        reverse("broker-new"),
        {"name": "prod-rabbit", "kind": "rabbitmq", "endpoint": "amqp://h/%2F", "credentials_ref": "env:PROD_RMQ",
         "options": '{"management_url": "http://h:15672"}', "enabled": "on"},
    )  # fmt: skip
    assert saved.status_code == 302
    broker = Broker.objects.get(name="prod-rabbit")
    assert broker.credentials_ref == "env:PROD_RMQ" and broker.options == {"management_url": "http://h:15672"}


def test_test_connection_reports_the_brokers_error(client_for, dlq) -> None:
    html = client_for(Role.ADMIN).post(reverse("broker-test", args=[dlq.broker.pk]), follow=True).content.decode()
    assert "cannot reach 127.0.0.1:1" in html or "127.0.0.1:1" in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"address": "orders.DLT", "consumer_group": ""}, "needs the consumer group"),
        ({"address": "orders.DLT", "consumer_group": "g", "capture_mode": "drain"}, "committing offsets"),
        ({"address": "orders.DLT", "consumer_group": "g", "header_mapping": '["x"]'}, "header_mapping"),
    ],
)
def test_dlq_validation_gives_clear_errors(client_for, dlq, data, message) -> None:
    form = {"broker": dlq.broker.pk, "name": "new-dlq", "capture_mode": "offsets", "capture_interval": 60,
            "capture_batch_size": 100, "sources": "[]", "header_mapping": "{}", "enabled": "on", **data}  # fmt: skip
    response = client_for(Role.ADMIN).post(reverse("dlq-new"), form)
    assert response.status_code == 200 and message in response.content.decode()
    assert not DeadLetterQueue.objects.filter(name="new-dlq").exists()


def test_an_sqs_dlq_needs_a_queue_url(client_for) -> None:
    broker = BrokerFactory(kind=BrokerKind.SQS)
    form = {"broker": broker.pk, "name": "q", "address": "orders-dlq", "capture_mode": "drain",
            "capture_interval": 60, "capture_batch_size": 10, "sources": "[]", "header_mapping": "{}"}  # fmt: skip
    html = client_for(Role.ADMIN).post(reverse("dlq-new"), form).content.decode()
    assert "queue URL" in html


def test_anonymous_users_cannot_download_bodies(dlq) -> None:
    letter = DeadLetterFactory(dlq=dlq, body=b"secret payload")
    response = Client().get(reverse("letter-body", args=[letter.pk]))
    assert response.status_code == 302 and b"secret payload" not in response.content
