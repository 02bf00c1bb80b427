from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from recovery.models import DeadLetter, DeadLetterQueue
from tests.factories import DeadLetterFactory


@pytest.fixture
def make_letter(dlq):
    """A timed-out letter of ``dlq`` (or ``target``) as capture and classification leave it,
    captured ``age_minutes`` ago."""

    def make(*, target: DeadLetterQueue | None = None, age_minutes: int = 0, **fields) -> DeadLetter:
        captured_at = timezone.now() - timedelta(minutes=age_minutes)
        return DeadLetterFactory(dlq=target or dlq, timed_out=True, captured_at=captured_at, **fields)

    return make
