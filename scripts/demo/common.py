"""What the demo seeders share: settings from the environment, one error type, waiting, summaries."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT = 60.0


class SeedError(RuntimeError):
    """A seeder could not reach the state it promises; the message names the queue or setting."""


def require_env(name: str) -> str:
    """The value of a LOCAL_* connection setting, or a SeedError naming the missing variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise SeedError(
            f"{name} is not set: start the local services (scripts/services.sh up) and load .local/env "
            "(set -a; . .local/env; set +a)"
        )
    return value


def wait_for_depth(address: str, depth: Callable[[], int], expected: int, *, timeout: float) -> int:
    """Poll ``depth()`` until it reaches ``expected``; a SeedError naming ``address`` on timeout."""
    deadline = time.monotonic() + timeout
    current = depth()
    while current < expected:
        if time.monotonic() >= deadline:
            raise SeedError(
                f"timed out after {timeout:.0f} s waiting for {address} to hold {expected} dead letters "
                f"(it holds {current})"
            )
        time.sleep(0.2)
        current = depth()
    return current


@dataclass
class DlqReport:
    """One dead-letter queue as the seeder left it, and what the console needs to configure it."""

    address: str
    expected: int
    depth: int = 0
    sources: list[str] = field(default_factory=list)
    replay_target: str = ""
    status: str = "seeded"  # seeded (filled now) or present (already held the expected messages)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form used in the seeder summaries."""
        return {
            "address": self.address,
            "expected": self.expected,
            "depth": self.depth,
            "sources": list(self.sources),
            "replay_target": self.replay_target,
            "status": self.status,
            **self.extra,
        }


def check_flow_state(address: str, depth: int, expected: int) -> str:
    """Decide what to do with one flow from its DLQ depth: ``present``, ``empty`` or a SeedError.

    A DLQ holding fewer messages than expected (but some) is left alone: it may be half captured or
    half seeded, and only ``reset=True`` may throw its messages away.
    """
    if depth >= expected:
        return "present"
    if depth == 0:
        return "empty"
    raise SeedError(
        f"{address} holds {depth} of the {expected} expected dead letters; "
        "pass reset=True (--reset) to purge and seed it again"
    )
