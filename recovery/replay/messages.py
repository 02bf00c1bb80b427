"""A dead letter turned back into a message for its target broker (invariant 3).

Every replayed message carries ``x-replay-id`` (stable per plan and letter), the letter's
``x-idempotency-key`` (stable across every plan: recovery.letters.identity), the original
message id as ``x-original-message-id`` and a W3C ``traceparent`` of the run's trace. Headers the
broker added when it dead-lettered the message (x-death and friends) are left behind: the
target's consumer should see the message as its producer sent it. For SQS FIFO targets the
replay id is the MessageDeduplicationId.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from recovery.brokers.base import OutgoingMessage
from recovery.letters.identity import IDEMPOTENCY_KEY, idempotency_key
from recovery.models import BrokerKind

REPLAY_ID = "x-replay-id"
ORIGINAL_MESSAGE_ID = "x-original-message-id"
TRACEPARENT = "traceparent"

_DEAD_LETTERING_HEADERS = ("x-death", "x-first-death-", "x-last-death-")
_AMQP_PROPERTIES = ("content_type", "content_encoding", "message_id", "correlation_id", "type", "app_id", "timestamp",
                    "priority", "reply_to", "user_id")  # fmt: skip


class Letter(Protocol):
    """What a replayed message is made of: a DeadLetter, or the engine's LetterContent."""

    body: Any
    headers: Any
    properties: Any
    content_type: str
    source_message_id: str
    identity: str


@dataclass(frozen=True)
class LetterContent:
    """A letter's content as the engine's claim reads it (no model instance per message)."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str
    source_message_id: str
    identity: str


def traceparent(trace_id: str) -> str:
    """A W3C traceparent in the run's trace with a fresh span id, sampled."""
    trace = trace_id if len(trace_id) == 32 else secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def original_message_id(letter: Letter) -> str:
    props = letter.properties or {}
    return str(props.get("message_id") or props.get("MessageId") or letter.source_message_id or letter.identity)[:300]


def outgoing(
    letter: Letter, *, kind: str, replay_id: str, trace_id: str, fifo: bool = False, parent: str = ""
) -> OutgoingMessage:
    """``parent``: the traceparent of the span publishing the message (the engine's replay batch,
    in the run's trace); without one, a fresh span id in the run's trace."""
    headers = _headers(letter, kind)
    headers[REPLAY_ID] = replay_id
    headers[IDEMPOTENCY_KEY] = idempotency_key(letter)
    headers[ORIGINAL_MESSAGE_ID] = original_message_id(letter)
    headers[TRACEPARENT] = parent or traceparent(trace_id)
    return OutgoingMessage(
        body=bytes(letter.body or b""), headers=headers, properties=_properties(letter, kind, replay_id, fifo)
    )


def _headers(letter: Letter, kind: str) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name, value in (letter.headers or {}).items():
        if name.startswith(_DEAD_LETTERING_HEADERS) or name in (REPLAY_ID, IDEMPOTENCY_KEY, ORIGINAL_MESSAGE_ID,
                                                                TRACEPARENT):  # fmt: skip
            continue
        if kind == BrokerKind.SQS and isinstance(value, dict):
            value = value.get("StringValue", value.get("BinaryValue"))  # captured attributes keep their shape
            if value is None:
                continue
        headers[name] = value
    return headers


def _properties(letter: Letter, kind: str, replay_id: str, fifo: bool) -> dict[str, Any]:
    props = letter.properties or {}
    if kind == BrokerKind.RABBITMQ:
        out = {name: props[name] for name in _AMQP_PROPERTIES if props.get(name) is not None}
        out.setdefault("content_type", letter.content_type or None)
        return {k: v for k, v in out.items() if v is not None}
    if kind == BrokerKind.KAFKA:
        return {"key": props["key"]} if props.get("key") is not None else {}  # the adapter decodes $base64
    if kind == BrokerKind.SQS and fifo:
        return {"message_group_id": props.get("MessageGroupId") or replay_id, "deduplication_id": replay_id}
    return {}
