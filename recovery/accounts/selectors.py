from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Prefetch

from recovery.permissions import Role


def user_list_with_roles() -> list[dict[str, Any]]:
    """Every user with the roles they hold, for the admin's user table."""
    from django.contrib.auth.models import Group

    users = (
        get_user_model()
        .objects.order_by("username")
        .prefetch_related(Prefetch("groups", queryset=Group.objects.filter(name__in=Role.values)))
    )
    return [{"user": user, "roles": sorted(g.name for g in user.groups.all())} for user in users]
