"""The canonical form of an audit event and the hashes and signatures over it.

Pure functions shared by the writer, the database verifier and the offline file verifier, so
the three can never disagree about what an event's bytes are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH = "0" * 64

# The fields covered by an event's hash, in the order exports list them.
EVENT_FIELDS = (
    "seq",
    "at",
    "actor_id",
    "actor_name",
    "client_ip",
    "user_agent",
    "request_id",
    "trace_id",
    "action",
    "object_type",
    "object_id",
    "summary",
    "before",
    "after",
    "reason",
    "prev_hash",
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 characters kept, no NaN: the same value gives the same text."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        cls=DjangoJSONEncoder,
    )


def clean_text(value: str, limit: int | None = None) -> str:
    """PostgreSQL text cannot hold NUL; hostile input must not make an audit write fail."""
    value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit else value


def normalise_json(value: Any) -> Any:
    """The value as it reads back from a JSON column: JSON types only, NULs replaced."""
    if value is None:
        return None
    return json.loads(canonical_json(value).replace("\\u0000", "\\ufffd"))


def format_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def event_content(
    *,
    seq: int,
    at: datetime | str,
    actor_id: int | None,
    actor_name: str,
    client_ip: str,
    user_agent: str,
    request_id: str,
    trace_id: str,
    action: str,
    object_type: str,
    object_id: str,
    summary: str,
    before: Any,
    after: Any,
    reason: str,
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "seq": int(seq),
        "at": at if isinstance(at, str) else format_time(at),
        "actor_id": actor_id,
        "actor_name": actor_name,
        "client_ip": client_ip,
        "user_agent": user_agent,
        "request_id": request_id,
        "trace_id": trace_id,
        "action": str(action),
        "object_type": object_type,
        "object_id": object_id,
        "summary": summary,
        "before": before,
        "after": after,
        "reason": reason,
        "prev_hash": prev_hash,
    }


def event_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def key_id(key: bytes) -> str:
    """A short public name for a signing key, so a verifier knows which key signed what."""
    return hashlib.sha256(b"audit-key-id:" + key).hexdigest()[:16]


def checkpoint_signature(key: bytes, *, seq: int, head_hash: str, at: str) -> str:
    message = canonical_json({"seq": int(seq), "head_hash": head_hash, "at": at}).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, value: Any) -> str:
    return hmac.new(key, canonical_json(value).encode(), hashlib.sha256).hexdigest()


def signatures_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
