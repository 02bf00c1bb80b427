"""Domain models, one module per aggregate."""

from recovery.models.brokers import Broker, BrokerKind
from recovery.models.health import WorkerHeartbeat

__all__ = ["Broker", "BrokerKind", "WorkerHeartbeat"]
