"""One error hierarchy for the domain. Views turn these into messages; jobs into a recorded failure."""

from __future__ import annotations


class RecoveryError(Exception):
    """Base of every error the domain raises on purpose; its message is safe to show an operator."""


class InvalidInput(RecoveryError):
    """The request is malformed or out of range; nothing was changed."""


class NotPermitted(RecoveryError):
    """The actor lacks the capability the action needs (checked in services, not only in views)."""


class BrokerError(RecoveryError):
    """A broker call failed. ``permanent`` says whether retrying the same call can succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
