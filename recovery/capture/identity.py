"""The broker identity of a captured message (invariant 1: capture is idempotent on it)."""

from __future__ import annotations

import hashlib

from recovery.audit.canonical import canonical_json
from recovery.brokers.base import ReceivedMessage
from recovery.models import BrokerKind

# Delivery-specific AMQP fields: they change between redeliveries of the same message.
_AMQP_VOLATILE = {"redelivered"}


def content_digest(message: ReceivedMessage) -> str:
    """SHA-256 over the body, the headers and the stable properties."""
    properties = {k: v for k, v in message.properties.items() if k not in _AMQP_VOLATILE}
    digest = hashlib.sha256(message.body)
    digest.update(b"\0headers\0" + canonical_json(message.headers).encode())
    digest.update(b"\0properties\0" + canonical_json(properties).encode())
    return digest.hexdigest()


def capture_identity(kind: str, message: ReceivedMessage) -> str:
    """SQS: the MessageId. Kafka: topic/partition/offset. RabbitMQ: the AMQP message_id with a
    digest of the content (headers include x-death, whose times and counts change when a
    message dies again), or the digest alone when the publisher set no message_id. Two
    different messages never share an identity; a redelivery of the same one always does."""
    if kind == BrokerKind.SQS:
        return f"sqs:{message.identity}"
    if kind == BrokerKind.KAFKA:
        return f"kafka:{message.identity}"
    digest = content_digest(message)
    if message.identity:
        return f"amqp:{message.identity[:200]}:{digest[:24]}"
    return f"amqp:sha256:{digest}"
