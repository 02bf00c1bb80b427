"""What makes two dead letters the same message delivered twice (issue 15, part 6).

Two letters are duplicates only when something that names the *message* says they are the same:

1. the producer's message id: AMQP ``message_id``; a CloudEvents id (``ce_id``, ``ce-id``,
   ``cloudEvents:id``, ``cloudEvents_id``); ``NServiceBus.MessageId``; a Celery task id; a
   ``message-id`` / ``message_id`` / ``messageId`` / ``x-message-id`` header or SQS attribute; an
   SQS FIFO ``MessageDeduplicationId`` the producer chose (not a content-based one, which is the
   body's SHA-256). The same id under two broker identities is one message delivered twice;
2. else the broker identity of the original message: the source topic, partition and offset a
   Kafka dead-letter writer recorded (``source_message_id`` "orders[0]@42"); an SQS MessageId;
3. else nothing: RabbitMQ names no message, and equal bodies alone never make a duplicate
   (the same event may legitimately be published twice: different Kafka keys or offsets, new ids).

The key is scoped to the letter's broker kind and failure origin (the same message failing in two
different consumers is two failures, each to be replayed to its own queue), and to its
``x-replay-id`` when it is a replayed copy that came back: the copy is the original's return,
not its duplicate, while two deliveries of one copy are duplicates.

Pure: no models, no I/O. Migration 0017 calls ``duplicate_key`` to re-evaluate old marks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from recovery.classification.subject import value_text

MAX_ID = 300
# Producer message id headers (case-insensitive), best first.
ID_HEADERS = (
    "ce_id", "ce-id", "cloudEvents:id", "cloudEvents_id", "NServiceBus.MessageId", "message-id", "message_id",
    "messageId", "x-message-id",
)  # fmt: skip
_KAFKA_POSITION = re.compile(r".+\[\d+\]@\d+")


def _get(mapping: Any, name: str) -> Any:
    if not isinstance(mapping, dict):
        return None
    if name in mapping:
        return mapping[name]
    lower = name.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lower:
            return value
    return None


def _text(value: Any) -> str:
    text = value_text(value) if value is not None else None
    return text.strip()[:MAX_ID] if text else ""


def _is_celery(headers: Any) -> bool:
    return bool(_text(_get(headers, "task"))) and (
        _get(headers, "lang") == "py" or _get(headers, "argsrepr") is not None
    )


def producer_message_id(*, kind: str, headers: Any, properties: Any, content_hash: str = "") -> str:
    """The id the producer gave the message, or "" (see the module docstring)."""
    if kind == "rabbitmq":
        found = _text(_get(properties, "message_id"))
        if found:
            return found
    for name in ID_HEADERS:
        found = _text(_get(headers, name))
        if found:
            return found
    if _is_celery(headers):
        found = _text(_get(headers, "id"))
        if found:
            return f"celery:{found}"
    if kind == "sqs":
        dedup = _text(_get(properties, "MessageDeduplicationId"))
        if dedup and dedup.lower() != (content_hash or "").lower():  # content-based: the body's SHA-256
            return f"dedup:{dedup}"
    return ""


def duplicate_key(
    *,
    kind: str,
    identity: str,
    origin: str,
    headers: Any,
    properties: Any,
    content_hash: str = "",
    source_message_id: str = "",
) -> str:
    """SHA-256 (hex) naming the message this letter is a delivery of, or "" when nothing names it
    (such a letter is never anyone's duplicate)."""
    replay_id = _text(_get(headers, "x-replay-id"))
    name = producer_message_id(kind=kind, headers=headers, properties=properties, content_hash=content_hash)
    if name:
        name = f"id:{name}"
    elif replay_id and _text(_get(headers, "x-original-message-id")):
        name = f"id:{_text(_get(headers, 'x-original-message-id'))}"
    elif kind == "kafka" and _KAFKA_POSITION.fullmatch(source_message_id or ""):
        name = f"position:{source_message_id}"
    elif kind == "sqs" and identity:
        name = f"broker:{identity}"
    else:
        return ""
    text = "\0".join((kind, origin or "", name, replay_id))
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
