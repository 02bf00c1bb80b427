"""A drill run's synthetic messages: N of them, each carrying the run id and its sequence
number (headers and body) so that losses and duplicates can be counted per message.

Behaviours: ``ok`` (processed at once), ``transient`` (the consumer's dependency times out
until the replay: the replayed copy, carrying x-replay-id, succeeds) and ``poison`` (the body
is broken JSON: it fails every time and must be held, never replayed).

RabbitMQ and SQS dead-letter a message as it is, so a consumer cannot add why it failed. The
synthetic failure therefore travels with the message, in the ``x-exception-class`` /
``x-exception-message`` headers Spring AMQP's recoverer writes, which recovery.metadata reads
and the shipped default rules map: ``TimeoutError`` -> transient/replay ("Timeout"),
``JSONDecodeError`` -> poison/hold ("Decode error"). On Kafka the drill's consumer also writes
Spring Kafka's ``kafka_dlt-*`` headers when it publishes a failure to the DLQ topic.
"""

from __future__ import annotations

import json
import random
from typing import Any

from django.utils import timezone

from recovery.brokers.base import OutgoingMessage, ReceivedMessage
from recovery.models import BrokerKind

RUN_HEADER = "x-drill-run"
SEQ_HEADER = "x-drill-seq"
REPLAY_HEADER = "x-replay-id"
OK, TRANSIENT, POISON = "ok", "transient", "poison"
FAILURES = {
    TRANSIENT: ("TimeoutError", "drill: simulated dependency timeout (read timed out after 5 s)"),
    POISON: ("JSONDecodeError", "Expecting ',' delimiter: the body is not valid JSON"),
}


def behaviours(run_id: int, *, total: int, transient: int, poison: int) -> list[str]:
    """The behaviour of each sequence number, shuffled per run (reproducible from the run id)."""
    kinds = [TRANSIENT] * transient + [POISON] * poison + [OK] * (total - transient - poison)
    random.Random(run_id).shuffle(kinds)  # noqa: S311 - an order, not a secret
    return kinds


def message(kind: str, run_id: int, seq: int, behaviour: str) -> OutgoingMessage:
    """The synthetic message ``seq`` of run ``run_id``; a poison body is JSON cut short."""
    document = {"drill_run": run_id, "seq": seq, "behaviour": behaviour, "sent_at": timezone.now().isoformat()}
    text = json.dumps(document)
    body = (text[:-1] if behaviour == POISON else text).encode()
    headers: dict[str, Any] = {RUN_HEADER: str(run_id), SEQ_HEADER: str(seq)}
    if behaviour in FAILURES:
        headers["x-exception-class"], headers["x-exception-message"] = FAILURES[behaviour]
    properties: dict[str, Any] = {}
    if kind == BrokerKind.RABBITMQ:
        properties = {"content_type": "application/json", "message_id": f"drill-{run_id}-{seq}", "app_id": "drill"}
    elif kind == BrokerKind.KAFKA:
        properties = {"key": f"drill-{run_id}-{seq}"}
    return OutgoingMessage(body=body, headers=headers, properties=properties)


def header(message: ReceivedMessage | dict[str, Any], name: str) -> str:
    """A header's text whatever the broker's shape (SQS attributes are {"DataType", "StringValue"})."""
    headers = message if isinstance(message, dict) else message.headers
    value = headers.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, dict):
        value = value.get("StringValue")
    return "" if value is None else str(value)


def identify(headers: dict[str, Any]) -> tuple[int | None, int | None, str]:
    """(drill run id, sequence number, x-replay-id) of a message or letter; None when absent."""
    try:
        run_id = int(header(headers, RUN_HEADER))
        seq = int(header(headers, SEQ_HEADER))
    except ValueError:
        return None, None, header(headers, REPLAY_HEADER)
    return run_id, seq, header(headers, REPLAY_HEADER)


def behaviour_of(body: bytes) -> str:
    """What the consumer makes of a body: its declared behaviour, or poison when it cannot parse
    it (a real JSON decode failure, not a flag)."""
    try:
        document = json.loads(body)
    except ValueError:
        return POISON
    return str(document.get("behaviour", OK)) if isinstance(document, dict) else POISON
