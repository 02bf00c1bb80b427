from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group

from recovery.accounts.services import user_roles_set
from recovery.errors import InvalidInput, NotPermitted
from recovery.permissions import Capability, Role, ensure_can, user_can, user_capabilities


@pytest.mark.django_db
def test_the_role_groups_exist_after_migrating() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {r.value for r in Role}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.VIEWER, {Capability.VIEW}),
        (
            Role.OPERATOR,
            {Capability.VIEW, Capability.CAPTURE, Capability.CLASSIFY, Capability.PLAN, Capability.RUN},
        ),
        (Role.APPROVER, {Capability.VIEW, Capability.APPROVE}),
        (Role.ADMIN, {Capability.VIEW, Capability.MANAGE}),
    ],
)
def test_each_role_grants_its_capabilities(make_user, role: Role, expected: set[Capability]) -> None:
    assert user_capabilities(make_user(role)) == expected


@pytest.mark.django_db
def test_capabilities_of_several_roles_add_up(make_user) -> None:
    user = make_user(Role.OPERATOR, Role.APPROVER)
    assert user_can(user, Capability.PLAN) and user_can(user, Capability.APPROVE)


@pytest.mark.django_db
def test_superuser_status_grants_no_capability(django_user_model) -> None:
    root = django_user_model.objects.create_superuser("root", password="x" * 16)
    assert user_capabilities(root) == frozenset()


@pytest.mark.django_db
def test_inactive_and_anonymous_users_hold_nothing(make_user) -> None:
    user = make_user(Role.ADMIN)
    user.is_active = False
    assert user_capabilities(user) == frozenset()
    assert user_capabilities(AnonymousUser()) == frozenset()


@pytest.mark.django_db
def test_ensure_can_names_the_missing_capability(make_user) -> None:
    with pytest.raises(NotPermitted, match="approve or reject replay plans"):
        ensure_can(make_user(Role.OPERATOR, username="olga"), Capability.APPROVE)


@pytest.mark.django_db
def test_the_last_active_admin_cannot_lose_the_admin_role(make_user) -> None:
    admin = make_user(Role.ADMIN)
    with pytest.raises(InvalidInput, match="last active admin"):
        user_roles_set(actor=admin, user=admin, roles=["viewer"])
    assert list(admin.groups.values_list("name", flat=True)) == ["admin"]


@pytest.mark.django_db
def test_an_admin_can_step_down_when_another_admin_remains(make_user) -> None:
    first, _second = make_user(Role.ADMIN), make_user(Role.ADMIN)
    user_roles_set(actor=first, user=first, roles=["viewer"])
    assert list(first.groups.values_list("name", flat=True)) == ["viewer"]


@pytest.mark.django_db
def test_the_role_service_refuses_non_admins(make_user) -> None:
    with pytest.raises(NotPermitted):
        user_roles_set(actor=make_user(Role.OPERATOR), user=make_user(), roles=["admin"])
