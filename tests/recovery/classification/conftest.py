"""Letters for classification tests, written straight into the store, unclassified, as capture
leaves them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from recovery.models import DeadLetter, DeadLetterQueue
from tests.factories import DeadLetterFactory


@pytest.fixture
def make_letter(dlq) -> Callable[..., DeadLetter]:
    """A captured, unclassified letter from kafka:orders of ``dlq`` (or ``target``); its body is
    ``{}`` unless given."""

    def make(*, target: DeadLetterQueue | None = None, **fields: Any) -> DeadLetter:
        return DeadLetterFactory(**{"dlq": target or dlq, "body": b"{}", "origin": "kafka:orders", **fields})

    return make
