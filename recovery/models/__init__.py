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
from recovery.models.letters import (
    CaptureMode,
    CapturePass,
    CapturePassState,
    CaptureTrigger,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterState,
)

__all__ = [
    "AuditAction",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditVerification",
    "Broker",
    "BrokerKind",
    "CaptureMode",
    "CapturePass",
    "CapturePassState",
    "CaptureTrigger",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterState",
    "VerificationState",
    "WorkerHeartbeat",
]
