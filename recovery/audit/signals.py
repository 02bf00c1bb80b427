"""Sign-in, sign-out and refused sign-ins go into the audit trail (connected in RecoveryConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver

from recovery.audit.canonical import clean_text
from recovery.audit.services import audit_record
from recovery.models import AuditAction


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **_: Any) -> None:
    with transaction.atomic():
        audit_record(actor=user, action=AuditAction.LOGIN, obj=user, summary=f"{user.get_username()} signed in")


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if user is None:
        return
    with transaction.atomic():
        audit_record(actor=user, action=AuditAction.LOGOUT, obj=user, summary=f"{user.get_username()} signed out")


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    # Django has already replaced the password with asterisks; keep only the name tried.
    tried = clean_text(str(credentials.get("username", "")), 150)
    with transaction.atomic():
        audit_record(
            actor=None,
            action=AuditAction.LOGIN_FAILED,
            summary=f"sign-in refused for {tried!r}",
            after={"username": tried},
        )
