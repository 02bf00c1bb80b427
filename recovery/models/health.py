from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """The latest proof, per job backend and worker, that the scheduler -> queue -> worker ->
    database path works end to end. One row per (backend, worker), updated in place."""

    backend = models.CharField(max_length=16)
    worker = models.CharField(max_length=200)
    beat_at = models.DateTimeField()
    beats = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backend", "worker"], name="heartbeat_one_row_per_worker")]
        ordering = ["-beat_at"]

    def __str__(self) -> str:
        return f"{self.backend}:{self.worker} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
