"""Replay plans (issue 6 builds the engine; issue 5 creates drafts from a triage selection)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PlanState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    CANCELLED = "cancelled", "Cancelled"


class ReplayPlan(models.Model):
    """A replay plan. While a draft, ``selection`` describes which letters it covers (a letters
    filter, a fingerprint group or picked ids); submitting freezes it into plan items."""

    name = models.CharField(max_length=200)
    reason = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plans")
    state = models.CharField(max_length=16, choices=PlanState.choices, default=PlanState.DRAFT)
    selection = models.JSONField(default=dict, blank=True)
    selection_summary = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name
