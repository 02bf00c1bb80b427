"""Roles and what they may do: the one place views and services ask.

Roles are Django groups (created by migration 0002). A user may hold several; the capabilities of
all of them add up. Superuser status grants nothing by itself: four-eyes approval must not be
bypassed by a flag on the account.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse

from recovery.errors import NotPermitted


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    APPROVER = "approver", "Approver"
    ADMIN = "admin", "Admin"


class Capability(models.TextChoices):
    VIEW = "view", "See the console"
    CAPTURE = "capture", "Capture dead letters"
    CLASSIFY = "classify", "Classify and triage dead letters"
    PLAN = "plan", "Create and edit replay plans"
    RUN = "run", "Start, pause, resume and abort approved runs"
    APPROVE = "approve", "Approve or reject replay plans"
    MANAGE = "manage", "Manage brokers, rules, users and settings"
    UNMASK = "unmask", "See masked fields in clear"


ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.VIEWER: frozenset({Capability.VIEW}),
    Role.OPERATOR: frozenset(
        {Capability.VIEW, Capability.CAPTURE, Capability.CLASSIFY, Capability.PLAN, Capability.RUN}
    ),
    Role.APPROVER: frozenset({Capability.VIEW, Capability.APPROVE}),
    Role.ADMIN: frozenset({Capability.VIEW, Capability.MANAGE}),
}

# Grants held on top of a role, each a group of this name. Masks hold for everyone without the
# unmask grant, admins included: seeing personal data in clear is a separate decision.
UNMASK_GROUP = "unmask"

User = AbstractBaseUser | AnonymousUser


def role_groups() -> dict[Role, Any]:
    """The group of each role, created if missing (migration 0002 creates them; a database flushed
    by a test or restored without data must not lose the ability to assign roles)."""
    from django.contrib.auth.models import Group

    return {role: Group.objects.get_or_create(name=role.value)[0] for role in Role}


def user_roles(user: Any) -> frozenset[Role]:
    """The roles a user holds (empty for anonymous or inactive users); cached on the user object."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return frozenset()
    names = _group_names(user)
    return frozenset(role for role in Role if role.value in names)


def user_capabilities(user: Any) -> frozenset[Capability]:
    caps: set[Capability] = set()
    for role in user_roles(user):
        caps |= ROLE_CAPABILITIES[role]
    if caps and UNMASK_GROUP in _group_names(user):
        caps.add(Capability.UNMASK)
    return frozenset(caps)


def user_unmasked(user: Any) -> bool:
    """Whether this user sees masked fields in clear (the unmask grant)."""
    return user_can(user, Capability.UNMASK)


def _group_names(user: Any) -> frozenset[str]:
    """The user's group names, read once per user object (per request)."""
    cached = getattr(user, "_recovery_groups", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._recovery_groups = cached
    return cached


def user_can(user: Any, capability: Capability) -> bool:
    return capability in user_capabilities(user)


def ensure_can(user: Any, capability: Capability) -> None:
    """Raise NotPermitted unless the user holds ``capability``. Services call this first.

    A system actor (a string such as "scheduler" or "cli:alice") passes: it names code that runs
    outside any request (the scheduler, workers, manage.py, whose user already controls the
    installation). Views always pass ``request.user``, never a string."""
    if isinstance(user, str):
        return
    if not user_can(user, capability):
        name = getattr(user, "get_username", lambda: "anonymous")()
        raise NotPermitted(f"{name} may not {Capability(capability).label.lower()}")


def capability_required(
    capability: Capability,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """View decorator: 403 unless the logged-in user holds ``capability`` (login is enforced by
    LoginRequiredMiddleware before the view runs)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not user_can(request.user, capability):
                raise PermissionDenied(f"requires the '{capability}' capability")
            return view(request, *args, **kwargs)

        wrapped.required_capability = capability  # type: ignore[attr-defined]
        return wrapped

    return decorator
