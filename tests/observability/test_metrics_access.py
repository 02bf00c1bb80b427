"""/metrics answers a scraper with the token or a logged-in admin, and nobody else: anonymous
and wrong-token requests get 401, logged-in users without the admin role 403, never the content."""

from __future__ import annotations

import pytest
from django.test import Client

from recovery.permissions import Role

TOKEN = "scrape-token-" + "t" * 32
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _token(settings) -> None:
    settings.RECOVERY_METRICS_TOKEN = TOKEN


def _refused(response, status: int) -> None:
    assert response.status_code == status
    assert b"recovery_" not in response.content


def test_it_refuses_anonymous_requests_with_401() -> None:
    response = Client().get("/metrics")
    _refused(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_refuses_a_wrong_token() -> None:
    _refused(Client().get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token"), 401)


def test_it_refuses_any_token_when_none_is_configured(settings) -> None:
    settings.RECOVERY_METRICS_TOKEN = ""
    _refused(Client().get("/metrics", HTTP_AUTHORIZATION="Bearer "), 401)
    _refused(Client().get("/metrics", HTTP_AUTHORIZATION="Bearer anything"), 401)


def test_it_serves_the_token_holder() -> None:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"recovery_metrics_source_up" in response.content


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_it_refuses_logged_in_users_without_the_admin_role(client_for, role: Role) -> None:
    _refused(client_for(role).get("/metrics"), 403)


def test_it_refuses_a_user_without_any_role(client_for) -> None:
    _refused(client_for().get("/metrics"), 403)


def test_it_serves_a_logged_in_admin(client_for) -> None:
    response = client_for(Role.ADMIN).get("/metrics")
    assert response.status_code == 200
    assert b"recovery_replay_runs" in response.content


def test_a_wrong_token_is_refused_even_with_an_admin_session(client_for) -> None:
    _refused(client_for(Role.ADMIN).get("/metrics", HTTP_AUTHORIZATION="Bearer wrong"), 401)


def test_it_rejects_post(client_for) -> None:
    assert client_for(Role.ADMIN).post("/metrics").status_code == 405
