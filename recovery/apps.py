from __future__ import annotations

from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    """The domain app: the only app with business models (see shared/DESIGN.md)."""

    name = "recovery"
    verbose_name = "DLQ recovery"

    def ready(self) -> None:
        from recovery.audit import signals  # noqa: F401 - connects the auth signal receivers
        from recovery.jobs import definitions  # noqa: F401 - fills the job registry
