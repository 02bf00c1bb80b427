"""Appending to the audit chain from a data migration (invariant 8).

``audit_record`` needs the live AuditEvent model and a request context; a migration has neither:
it works on historical models. ``audit_append`` appends one event the same way (chain lock, head,
canonical content, hash) through whichever AuditEvent model it is given, inside the caller's
transaction, so the chain a verifier checks has no gap and no fork.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone

from recovery.audit.canonical import GENESIS_HASH, clean_text, event_content, event_hash, normalise_json

CHAIN_LOCK = 0x61756469745F63  # the same key as recovery.audit.services.CHAIN_LOCK


def audit_append(
    event_model: Any,
    *,
    actor_name: str,
    action: str,
    summary: str,
    object_type: str = "",
    object_id: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> Any:
    """Append one event by a system actor (``actor_name`` like "system:migration")."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_append must run inside the transaction of the change it records")
    fields = {
        "actor_id": None,
        "actor_name": clean_text(actor_name, 150),
        "client_ip": "",
        "user_agent": "",
        "request_id": "",
        "trace_id": "",
        "action": str(action),
        "object_type": clean_text(object_type, 60),
        "object_id": clean_text(str(object_id), 64),
        "summary": clean_text(summary, 500),
        "before": normalise_json(before),
        "after": normalise_json(after),
        "reason": clean_text(reason),
    }
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])
    last = event_model.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    at = timezone.now()
    content = event_content(seq=seq, at=at, prev_hash=prev_hash, **fields)
    return event_model.objects.create(seq=seq, at=at, prev_hash=prev_hash, hash=event_hash(content), **fields)
