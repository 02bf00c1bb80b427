"""Where a replayed letter goes: resolved once, when a plan is submitted, and frozen on its item.

Order: the plan's override; else the letter's normalised origin when it names a place on the
letter's own broker (a Kafka topic, a RabbitMQ exchange + routing key or queue, an SQS queue);
else its DLQ's default replay target; else nothing, and the letter is excluded with that reason.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from recovery.brokers.base import Target
from recovery.models import BrokerKind, DeadLetterQueue, ReplayPlan

NO_TARGET = "no target: the origin is unknown and the DLQ has no default replay target (set an override)"


def target_json(broker_id: int, name: str, routing_key: str = "", vhost: str = "") -> dict[str, Any]:
    return {"broker": broker_id, "name": name, "routing_key": routing_key, "vhost": vhost}


def as_target(data: dict[str, Any]) -> Target:
    return Target(name=data["name"], routing_key=data.get("routing_key", ""), vhost=data.get("vhost", ""))


def describe(data: dict[str, Any], broker_names: dict[int, str] | None = None) -> str:
    broker = (broker_names or {}).get(data["broker"], f"broker {data['broker']}")
    key = f" → {data['routing_key']}" if data.get("routing_key") else ""
    return f"{broker}: {data['name'] or '(default exchange)'}{key}"


def resolve(plan: ReplayPlan, dlq: DeadLetterQueue, origin: str) -> dict[str, Any] | None:
    """The target of a letter of ``dlq`` whose failure came from ``origin`` (None: unresolved)."""
    if plan.target_broker_id and (plan.target_address or plan.target_routing_key):
        return target_json(plan.target_broker_id, plan.target_address, plan.target_routing_key, dlq.vhost)
    from_origin = _from_origin(dlq, origin)
    if from_origin is not None:
        return from_origin
    if dlq.replay_target or dlq.replay_routing_key:
        return target_json(dlq.broker_id, dlq.replay_target, dlq.replay_routing_key, dlq.vhost)
    return None


def _from_origin(dlq: DeadLetterQueue, origin: str) -> dict[str, Any] | None:
    kind, _, rest = origin.partition(":")
    if not rest or kind != dlq.broker.kind:
        return None  # celery:/masstransit:/... name a task or endpoint, not a place to publish to
    if kind == BrokerKind.KAFKA:
        return target_json(dlq.broker_id, rest.strip())
    if kind == BrokerKind.RABBITMQ:
        return _amqp(dlq, rest)
    if kind == BrokerKind.SQS:
        url = _sqs_url(dlq.address, rest.strip())
        return target_json(dlq.broker_id, url) if url else None
    return None


def _amqp(dlq: DeadLetterQueue, rest: str) -> dict[str, Any] | None:
    """'exchange=X routing_key=a,b queue=Q' (as recovery.metadata writes it)."""
    parts = dict(part.split("=", 1) for part in rest.split(" ") if "=" in part)
    exchange = parts.get("exchange")
    keys = [k for k in parts.get("routing_key", "").split(",") if k]
    if exchange is not None and exchange != "(default)" and keys:
        return target_json(dlq.broker_id, exchange, keys[0], dlq.vhost)
    queue = parts.get("queue") or (keys[0] if exchange == "(default)" and keys else "")
    return target_json(dlq.broker_id, "", queue, dlq.vhost) if queue else None


def _sqs_url(dlq_url: str, source: str) -> str:
    """A source queue URL, or an ARN turned into a URL on the DLQ's endpoint (same account)."""
    if source.startswith(("http://", "https://")):
        return source
    if source.startswith("arn:aws:sqs:"):
        name = source.rsplit(":", 1)[-1]
        split = urlsplit(dlq_url)
        path = split.path.rsplit("/", 1)[0] + "/" + name
        return urlunsplit((split.scheme, split.netloc, path, "", ""))
    return ""
