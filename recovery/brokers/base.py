"""The adapter Protocol every broker implementation satisfies. Everything outside
recovery/brokers/<kind>.py speaks this Protocol and never imports a client library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from recovery.errors import BrokerError

if TYPE_CHECKING:
    from recovery.models import Broker

__all__ = ["BrokerAdapter", "BrokerError", "Ping"]


@dataclass(frozen=True)
class Ping:
    """A successful round trip to the broker: how long it took and what the broker said."""

    latency_ms: float
    detail: str


class BrokerAdapter(Protocol):
    broker: Broker

    def __init__(self, broker: Broker, *, timeout: float) -> None: ...

    def ping(self) -> Ping:
        """One cheap authenticated round trip. Raises BrokerError with the broker's message."""
        ...

    def close(self) -> None: ...
