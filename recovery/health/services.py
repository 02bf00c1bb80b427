"""Writes for the health area."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from recovery.models import WorkerHeartbeat


def worker_heartbeat_record(*, backend: str, worker: str) -> WorkerHeartbeat:
    """Record that ``worker`` on ``backend`` ran a job just now (one row per worker, upserted)."""
    with transaction.atomic():
        beat, created = WorkerHeartbeat.objects.select_for_update().get_or_create(
            backend=backend, worker=worker, defaults={"beat_at": timezone.now(), "beats": 1}
        )
        if not created:
            WorkerHeartbeat.objects.filter(pk=beat.pk).update(beat_at=timezone.now(), beats=F("beats") + 1)
            beat.refresh_from_db()
    return beat
