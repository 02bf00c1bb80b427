"""What every new replay plan starts with (issue 15, part 3): stop conditions that pause a replay
whose letters come back or whose publishes fail, and the verification step that gathers evidence
per letter (recovery.replay.evidence). Without a verification step a run can only end "completed,
not verified" (invariant 12). The author may change or remove them; the approver sees the result.
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_STOP_CONDITIONS: list[dict[str, Any]] = [
    {"condition": "redeadletter_rate", "max_percent": 5, "window_s": 60},
    {"condition": "publish_error_rate", "max_percent": 10, "window_s": 60},
]
DEFAULT_VERIFICATIONS: list[dict[str, Any]] = [{"step": "letters_resolved", "seconds": 60, "settle_s": 300}]


def plan_defaults() -> dict[str, Any]:
    """The default stop conditions and verification of a new plan, as an author would type them
    (a plan stores its entries as given; parameters left out take their defaults when evaluated)."""
    return {
        "stop_conditions": copy.deepcopy(DEFAULT_STOP_CONDITIONS),
        "verifications": copy.deepcopy(DEFAULT_VERIFICATIONS),
    }
