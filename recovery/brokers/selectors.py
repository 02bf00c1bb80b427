from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from recovery.brokers.base import Candidate
from recovery.brokers.registry import broker_session
from recovery.errors import RecoveryError
from recovery.models import Broker


def broker_list() -> QuerySet[Broker]:
    return Broker.objects.order_by("name")


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str


def broker_connection_check(broker: Broker) -> ConnectionCheck:
    """'Test connection': one ping through the broker's adapter, as the health page does."""
    try:
        with broker_session(broker, timeout=settings.RECOVERY_HEALTH_TIMEOUT) as adapter:
            ping = adapter.ping()
    except RecoveryError as exc:
        return ConnectionCheck(False, str(exc))
    return ConnectionCheck(True, f"{ping.detail} ({ping.latency_ms:.1f} ms)")


def broker_candidates(broker: Broker) -> list[Candidate]:
    """Queues/topics on the broker that look like DLQs, for 'Discover' (raises BrokerError)."""
    with broker_session(broker, timeout=settings.RECOVERY_HEALTH_TIMEOUT * 3) as adapter:
        return adapter.list_candidates()
