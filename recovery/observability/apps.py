from __future__ import annotations

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """Starts tracing in every process (web, workers, scheduler, manage.py) from the OTEL_*
    environment, before the web handler loads its middleware (the Django instrumentation adds
    one). Off unless the environment asks for it: see recovery.observability.tracing."""

    name = "recovery.observability"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from recovery.observability import tracing

        tracing.setup_from_environment()
