"""User and role writes. Only holders of the MANAGE capability (admins) may change roles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from recovery.errors import InvalidInput
from recovery.permissions import Capability, Role, ensure_can, role_groups


def user_roles_set(*, actor: Any, user: Any, roles: Iterable[str]) -> frozenset[Role]:
    """Replace ``user``'s roles with ``roles``.

    Refuses to remove the admin role from the last active admin, so the console can never be
    left without someone able to manage it.
    """
    ensure_can(actor, Capability.MANAGE)
    wanted = frozenset(Role(r) for r in roles)
    with transaction.atomic():
        groups = role_groups()
        admins = Group.objects.select_for_update().get(pk=groups[Role.ADMIN].pk)
        loses_admin = Role.ADMIN not in wanted and admins.user_set.filter(pk=user.pk).exists()
        if loses_admin and not admins.user_set.filter(is_active=True).exclude(pk=user.pk).exists():
            raise InvalidInput("refusing to remove the admin role from the last active admin")
        user.groups.remove(*[g for r, g in groups.items() if r not in wanted])
        user.groups.add(*[g for r, g in groups.items() if r in wanted])
    if hasattr(user, "_recovery_roles"):
        del user._recovery_roles
    return wanted


def demo_users_ensure() -> dict[str, str | None]:
    """Make sure one demo user per role exists (``demo-<role>``, holding only that role).

    Returns username -> the new random password for users created now, None for users that
    already existed (their password is left alone: it was shown when they were created).
    """
    import secrets

    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    created: dict[str, str | None] = {}
    with transaction.atomic():
        groups = role_groups()
        for role in Role:
            username = f"demo-{role.value}"
            user = user_model.objects.filter(username=username).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = user_model.objects.create_user(username=username, password=password)
                created[username] = password
            else:
                created[username] = None
            user.groups.set([groups[role]])
    return created
