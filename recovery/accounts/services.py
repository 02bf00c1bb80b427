"""User and role writes. Only holders of the MANAGE capability (admins) may change roles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from recovery.audit.services import audit_record
from recovery.errors import InvalidInput
from recovery.models import AuditAction
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
        before = sorted(g.name for g in user.groups.filter(name__in=Role.values))
        user.groups.remove(*[g for r, g in groups.items() if r not in wanted])
        user.groups.add(*[g for r, g in groups.items() if r in wanted])
        after = sorted(r.value for r in wanted)
        audit_record(
            actor=actor,
            action=AuditAction.USER_ROLES_CHANGED,
            obj=user,
            summary=f"roles of {user.get_username()}: {', '.join(after) or 'none'}",
            before={"roles": before},
            after={"roles": after},
        )
    if hasattr(user, "_recovery_groups"):
        del user._recovery_groups
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
        audit_record(
            actor="seed_demo",
            action=AuditAction.DEMO_USERS_SEEDED,
            summary=f"demo users ensured ({sum(1 for p in created.values() if p)} created)",
            after={
                "created": sorted(n for n, p in created.items() if p),
                "existing": sorted(n for n, p in created.items() if not p),
            },
        )
    return created
