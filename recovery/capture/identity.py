"""The broker identity of a captured message (invariant 1: capture is idempotent on it)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection
from typing import Any

from django.db.models import Q

from recovery.brokers.base import ReceivedMessage
from recovery.models import BrokerKind, DeadLetter, DeadLetterQueue

# Delivery-specific AMQP fields: they change between redeliveries of the same message.
_AMQP_VOLATILE = "redelivered"

# Sorted keys and no spaces, so the same value always gives the same text. Headers and properties
# come from the adapters JSON-safe (recovery.brokers.base.json_safe); ``default=str`` only keeps
# anything else from raising (invariant 10). One encoder object: building one per call costs more
# than the encoding of a small dict.
_STABLE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def stable_json(value: Any) -> str:
    """The text capture stores a header or property table as, and digests it by."""
    return _STABLE.encode(value)


def body_hash(message: ReceivedMessage) -> str:
    """SHA-256 of the body, hex: the dead letter's ``content_hash``."""
    return hashlib.sha256(message.body).hexdigest()


def content_digest(message: ReceivedMessage, *, body_sha256: str = "", headers_json: str = "") -> str:
    """SHA-256 over the body's SHA-256, the headers (x-death included) and the stable properties,
    each as stable JSON: the same for every redelivery of one message. ``body_sha256`` and
    ``headers_json`` may be passed when the caller has them already (capture stores both)."""
    properties = message.properties
    if _AMQP_VOLATILE in properties:
        properties = {k: v for k, v in properties.items() if k != _AMQP_VOLATILE}
    digest = hashlib.sha256((body_sha256 or body_hash(message)).encode())
    digest.update(b"\0headers\0" + (headers_json or stable_json(message.headers)).encode())
    digest.update(b"\0properties\0" + stable_json(properties).encode())
    return digest.hexdigest()


def capture_identities(
    dlq: DeadLetterQueue,
    messages: list[ReceivedMessage],
    digests: list[str] | None = None,
    *,
    removed_rows: Collection[int] = (),
) -> list[str]:
    """One identity per message, in order. ``digests`` (AMQP only) are the messages' content
    digests when the caller computed them already; ``removed_rows`` are rows whose messages the
    broker has removed though their ``removed_at`` may not be committed yet.

    SQS and Kafka name their messages: the MessageId, or topic/partition/offset. RabbitMQ does
    not: two dead letters can be byte for byte the same and still be two messages (the same
    event published twice), and a message_id is the publisher's choice, often absent or reused.
    So an AMQP identity is the content digest plus a new random 128-bit suffix, and the broker's
    ``redelivered`` flag tells a redelivery from a new message: only a redelivered message may
    be the same as a row captured earlier, namely one with the same digest that was never
    removed from the broker (a pass died between commit and ack). Each such row matches one
    redelivery; anything else is a new dead letter.

    Reads the database: a row of an earlier batch must be marked removed before this runs, or be
    among ``removed_rows``; otherwise a redelivery could be matched to a row whose message the
    broker already dropped.
    """
    if dlq.broker.kind == BrokerKind.SQS:
        return [f"sqs:{m.identity}" for m in messages]
    if dlq.broker.kind == BrokerKind.KAFKA:
        return [f"kafka:{m.identity}" for m in messages]
    if digests is None:
        digests = [content_digest(m) for m in messages]
    redelivered = {d for d, m in zip(digests, messages, strict=True) if m.properties.get("redelivered")}
    pending = _pending_rows(dlq, redelivered, removed_rows)
    identities = []
    for digest, message in zip(digests, messages, strict=True):
        waiting = pending.get(digest) if message.properties.get("redelivered") else None
        identities.append(waiting.pop(0) if waiting else f"amqp:{digest}:{os.urandom(16).hex()}")
    return identities


def _pending_rows(dlq: DeadLetterQueue, digests: set[str], removed_rows: Collection[int]) -> dict[str, list[str]]:
    """Identities of rows with these digests still on the broker, oldest first, by digest."""
    if not digests:
        return {}
    query = Q()
    for digest in digests:
        query |= Q(identity__startswith=f"amqp:{digest}:")
    rows = DeadLetter.objects.filter(query, dlq=dlq, removed_at__isnull=True).order_by("id")
    if removed_rows:
        rows = rows.exclude(pk__in=list(removed_rows))
    pending: dict[str, list[str]] = {}
    for identity in rows.values_list("identity", flat=True):
        pending.setdefault(identity.split(":")[1], []).append(identity)
    return pending
