"""The drills' refusals, each a RecoveryError whose message is safe to show an operator."""

from __future__ import annotations

from recovery.errors import InvalidInput, NotPermitted, RecoveryError


class DrillInvalid(InvalidInput):
    """A drill definition refused at save time; ``field`` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotADrillQueue(DrillInvalid):
    """A queue without the drill prefix, chosen without an admin's explicit decision and reason."""


class DrillNotApproved(RecoveryError):
    """The drill has no standing approval for its current content: it does not run."""


class DrillBusy(InvalidInput):
    """A run of the drill is still active."""


class DrillFourEyes(NotPermitted):
    """The actor may not approve this drill: they wrote or changed it (four eyes)."""


class StepFailed(Exception):
    """A drill run's step did not reach its goal (internal to the runner: the run records it)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
