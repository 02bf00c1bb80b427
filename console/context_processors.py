"""Template context shared by every page: navigation and the signed-in user's roles."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from recovery.permissions import Capability, user_can, user_roles
from recovery.replay.waiting import waiting_count

# (label, url name or None while the screen does not exist yet, capability needed to see it)
NAVIGATION: list[tuple[str, str | None, Capability]] = [
    ("Overview", "overview", Capability.VIEW),
    ("Dead letters", "dead-letters", Capability.VIEW),
    ("Groups", "groups", Capability.VIEW),
    ("Runbooks", "runbooks", Capability.VIEW),
    ("Rules", "rules", Capability.VIEW),
    ("Plans", "plans", Capability.VIEW),
    ("Runs", "runs", Capability.VIEW),
    ("Drills", "drills", Capability.VIEW),
    ("Audit", "audit", Capability.VIEW),
    ("Health", "health", Capability.VIEW),
    ("Settings", "settings", Capability.MANAGE),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    items = []
    for label, url_name, capability in NAVIGATION:
        if not user_can(user, capability):
            continue
        url = reverse(url_name) if url_name else None
        active = bool(url) and (request.path == url if url == "/" else request.path.startswith(url))
        # Plans carries a count of plans waiting for this user: to approve, or approved to start.
        count = waiting_count(user) if url_name == "plans" else 0
        items.append({"label": label, "url": url, "active": active, "count": count})
    return {
        "nav_items": items,
        "user_role_names": sorted(role.label for role in user_roles(user)),
    }
