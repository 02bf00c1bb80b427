"""Domain models, one module per aggregate."""

from recovery.models.audit import (
    AuditAction,
    AuditCheckpoint,
    AuditEvent,
    AuditVerification,
    VerificationState,
)
from recovery.models.brokers import Broker, BrokerKind
from recovery.models.health import WorkerHeartbeat

__all__ = [
    "AuditAction",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditVerification",
    "Broker",
    "BrokerKind",
    "VerificationState",
    "WorkerHeartbeat",
]
