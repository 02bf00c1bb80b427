"""Every view requires login and the right role; mutating endpoints are POST-only with CSRF."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from recovery.permissions import Role

ALL = {Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}

# (view family, url) -> roles that may open it
PAGES = {
    "overview": ({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}, lambda: reverse("overview")),
    "health": ({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}, lambda: reverse("health")),
    "health-rows": ({Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN}, lambda: reverse("health-rows")),
    "settings": ({Role.ADMIN}, lambda: reverse("settings")),
    "audit": (ALL, lambda: reverse("audit")),
    "dead-letters": (ALL, lambda: reverse("dead-letters")),
    "letters-total": (ALL, lambda: reverse("letters-total")),
    "groups": (ALL, lambda: reverse("groups")),
    "runbooks": (ALL, lambda: reverse("runbooks")),
    "runbook-new": (ALL, lambda: reverse("runbook-new")),
    "plans": (ALL, lambda: reverse("plans")),
    "drills": (ALL, lambda: reverse("drills")),
    "drill-new": ({Role.OPERATOR}, lambda: reverse("drill-new")),
    "broker-new": ({Role.ADMIN}, lambda: reverse("broker-new")),
    "dlq-new": ({Role.ADMIN}, lambda: reverse("dlq-new")),
    "audit-verification": (ALL, lambda: reverse("audit-verification")),
    "audit-history": (ALL, lambda: reverse("audit-history", args=["auth.user", "1"])),
}


@pytest.mark.django_db
@pytest.mark.parametrize("page", sorted(PAGES))
def test_anonymous_users_are_redirected_to_login(page: str) -> None:
    url = PAGES[page][1]()
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("page", sorted(PAGES))
def test_each_role_reaches_exactly_its_pages(client_for, role: Role, page: str) -> None:
    allowed, url = PAGES[page]
    response = client_for(role).get(url())
    assert response.status_code == (200 if role in allowed else 403)


@pytest.mark.django_db
@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_user_without_a_role_is_refused_everywhere(client_for, page: str) -> None:
    assert client_for().get(PAGES[page][1]()).status_code == 403


@pytest.mark.django_db
def test_the_navigation_shows_settings_only_to_admins(client_for) -> None:
    assert b'href="/settings/"' in client_for(Role.ADMIN).get(reverse("overview")).content
    assert b'href="/settings/"' not in client_for(Role.OPERATOR).get(reverse("overview")).content


@pytest.mark.django_db
def test_the_page_shows_the_user_and_their_roles(make_user) -> None:
    client = Client()
    client.force_login(make_user(Role.OPERATOR, Role.APPROVER, username="alice"))
    body = client.get(reverse("overview")).content.decode()
    assert "alice" in body
    assert "Approver, Operator" in body


@pytest.mark.django_db
def test_role_update_rejects_get(client_for, make_user) -> None:
    target = make_user(Role.VIEWER)
    response = client_for(Role.ADMIN).get(reverse("user-roles-update", args=[target.pk]))
    assert response.status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_only_admins_can_change_roles(client_for, make_user, role: Role) -> None:
    target = make_user(Role.VIEWER)
    response = client_for(role).post(reverse("user-roles-update", args=[target.pk]), {"roles": ["admin"]})
    assert response.status_code == 403
    assert list(target.groups.values_list("name", flat=True)) == ["viewer"]


@pytest.mark.django_db
def test_an_admin_changes_a_users_roles(client_for, make_user) -> None:
    target = make_user(Role.VIEWER)
    response = client_for(Role.ADMIN).post(
        reverse("user-roles-update", args=[target.pk]), {"roles": ["operator", "approver"]}
    )
    assert response.status_code == 302
    assert sorted(target.groups.values_list("name", flat=True)) == ["approver", "operator"]


@pytest.mark.django_db
def test_role_update_requires_a_csrf_token(make_user) -> None:
    admin = make_user(Role.ADMIN)
    target = make_user(Role.VIEWER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    response = client.post(reverse("user-roles-update", args=[target.pk]), {"roles": ["admin"]})
    assert response.status_code == 403
    assert list(target.groups.values_list("name", flat=True)) == ["viewer"]


@pytest.mark.django_db
def test_an_unknown_role_is_refused_with_a_message(client_for, make_user) -> None:
    target = make_user(Role.VIEWER)
    response = client_for(Role.ADMIN).post(
        reverse("user-roles-update", args=[target.pk]), {"roles": ["superuser"]}, follow=True
    )
    assert "Roles not changed" in response.content.decode()
    assert list(target.groups.values_list("name", flat=True)) == ["viewer"]


@pytest.mark.django_db
def test_logout_is_post_only(client_for) -> None:
    client = client_for(Role.VIEWER)
    assert client.get(reverse("logout")).status_code == 405
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("overview")).status_code == 302
