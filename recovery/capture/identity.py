"""The broker identity of a captured message (invariant 1: capture is idempotent on it)."""

from __future__ import annotations

import hashlib
import uuid

from django.db.models import Q

from recovery.audit.canonical import canonical_json
from recovery.brokers.base import ReceivedMessage
from recovery.models import BrokerKind, DeadLetter, DeadLetterQueue

# Delivery-specific AMQP fields: they change between redeliveries of the same message.
_AMQP_VOLATILE = {"redelivered"}


def content_digest(message: ReceivedMessage) -> str:
    """SHA-256 over the body, the headers (x-death included) and the stable properties."""
    properties = {k: v for k, v in message.properties.items() if k not in _AMQP_VOLATILE}
    digest = hashlib.sha256(message.body)
    digest.update(b"\0headers\0" + canonical_json(message.headers).encode())
    digest.update(b"\0properties\0" + canonical_json(properties).encode())
    return digest.hexdigest()


def capture_identities(dlq: DeadLetterQueue, messages: list[ReceivedMessage]) -> list[str]:
    """One identity per message, in order.

    SQS and Kafka name their messages: the MessageId, or topic/partition/offset. RabbitMQ does
    not: two dead letters can be byte for byte the same and still be two messages (the same
    event published twice), and a message_id is the publisher's choice, often absent or reused.
    So an AMQP identity is the content digest plus a new random suffix, and the broker's
    ``redelivered`` flag tells a redelivery from a new message: only a redelivered message may
    be the same as a row captured earlier, namely one with the same digest that was never
    removed from the broker (a pass died between commit and ack). Each such row matches one
    redelivery; anything else is a new dead letter.
    """
    if dlq.broker.kind == BrokerKind.SQS:
        return [f"sqs:{m.identity}" for m in messages]
    if dlq.broker.kind == BrokerKind.KAFKA:
        return [f"kafka:{m.identity}" for m in messages]
    digests = [content_digest(m) for m in messages]
    pending = _pending_rows(dlq, {d for d, m in zip(digests, messages, strict=True) if m.properties.get("redelivered")})
    identities = []
    for digest, message in zip(digests, messages, strict=True):
        waiting = pending.get(digest) if message.properties.get("redelivered") else None
        identities.append(waiting.pop(0) if waiting else f"amqp:{digest}:{uuid.uuid4().hex}")
    return identities


def _pending_rows(dlq: DeadLetterQueue, digests: set[str]) -> dict[str, list[str]]:
    """Identities of rows with these digests still on the broker, oldest first, by digest."""
    if not digests:
        return {}
    query = Q()
    for digest in digests:
        query |= Q(identity__startswith=f"amqp:{digest}:")
    rows = DeadLetter.objects.filter(query, dlq=dlq, removed_at__isnull=True).order_by("id")
    pending: dict[str, list[str]] = {}
    for identity in rows.values_list("identity", flat=True):
        pending.setdefault(identity.split(":")[1], []).append(identity)
    return pending
