"""Domain models, one module per aggregate."""

from recovery.models.audit import (
    AuditAction,
    AuditCheckpoint,
    AuditEvent,
    AuditVerification,
    VerificationState,
)
from recovery.models.brokers import Broker, BrokerKind
from recovery.models.classification import (
    Category,
    ClassificationRule,
    ClassificationSource,
    Disposition,
    FingerprintGroup,
    Runbook,
    TriageAction,
    TriageActionItem,
    TriageActionKind,
    TriageJob,
    TriageJobKind,
    TriageJobState,
)
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
from recovery.models.plans import PlanState, ReplayPlan

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
    "Category",
    "ClassificationRule",
    "ClassificationSource",
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLetterState",
    "Disposition",
    "FingerprintGroup",
    "PlanState",
    "ReplayPlan",
    "Runbook",
    "TriageAction",
    "TriageActionItem",
    "TriageActionKind",
    "TriageJob",
    "TriageJobKind",
    "TriageJobState",
    "VerificationState",
    "WorkerHeartbeat",
]
