"""Where a replayed letter goes: resolved once, when a plan is submitted, and frozen on its item
together with where it came from (``PlanItem.target_source``, invariant 14).

Order:

1. the plan's override (``override``);
2. the place the letter's own record names (recovery.metadata's ``replay_origin``), which is
   already the best of: the broker's dead-lettering record (``broker``: RabbitMQ x-death, SQS
   redrive source, a Kafka share group), a Kafka framework's dead-letter writer (``framework``:
   Spring Kafka, Kafka Connect, Kafka Streams), then producer-set headers (``headers``:
   x-original-*, MassTransit, NServiceBus), which the dry run marks "from message headers";
   a letter captured before the source was recorded falls back to the broker origin the
   normalisation kept (``broker``), else its failure origin (``origin``);
3. its DLQ's default replay target (``dlq_default``);
4. nothing: the letter is excluded with that reason.

A RabbitMQ record that names the queue the message was dead-lettered from goes back to that queue
(default exchange): only the consumer that failed receives it again, not every queue bound to
the original exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.db.models import Case, TextField, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Concat, Replace

from recovery.brokers.base import Target
from recovery.models import BrokerKind, DeadLetterQueue, ReplayPlan, TargetSource

NO_TARGET = "no target: the origin is unknown and the DLQ has no default replay target (set an override)"


def target_json(broker_id: int, name: str, routing_key: str = "", vhost: str = "") -> dict[str, Any]:
    return {"broker": broker_id, "name": name, "routing_key": routing_key, "vhost": vhost}


def as_target(data: dict[str, Any]) -> Target:
    return Target(name=data["name"], routing_key=data.get("routing_key", ""), vhost=data.get("vhost", ""))


def describe(data: dict[str, Any], broker_names: dict[int, str] | None = None) -> str:
    broker = (broker_names or {}).get(data["broker"], f"broker {data['broker']}")
    key = f" → {data['routing_key']}" if data.get("routing_key") else ""
    return f"{broker}: {data['name'] or '(default exchange)'}{key}"


@dataclass(frozen=True)
class Resolved:
    target: dict[str, Any]
    source: str  # a TargetSource value


# recovery.metadata's replay_origin_source -> TargetSource
_RECORDED_BY = {
    "broker": TargetSource.BROKER,
    "framework": TargetSource.FRAMEWORK,
    "headers": TargetSource.HEADERS,
}


def resolve(
    plan: ReplayPlan, dlq: DeadLetterQueue, origin: str, replay_origin: str = "", replay_source: str = ""
) -> Resolved | None:
    """The target of a letter of ``dlq`` and where it came from (None: unresolved). ``origin`` is
    the letter's failure origin; ``replay_origin`` / ``replay_source`` are what the letter's
    normalised failure recorded for replay (empty for letters captured before that existed)."""
    if plan.target_broker_id and (plan.target_address or plan.target_routing_key):
        target = target_json(plan.target_broker_id, plan.target_address, plan.target_routing_key, dlq.vhost)
        return Resolved(target, TargetSource.OVERRIDE)
    if replay_origin:
        recorded = _from_origin(dlq, replay_origin)
        if recorded is not None:
            return Resolved(recorded, _RECORDED_BY.get(replay_source, TargetSource.HEADERS))
    elif origin:
        legacy = _from_origin(dlq, origin)
        if legacy is not None:
            return Resolved(legacy, TargetSource.ORIGIN)
    if dlq.replay_target or dlq.replay_routing_key:
        target = target_json(dlq.broker_id, dlq.replay_target, dlq.replay_routing_key, dlq.vhost)
        return Resolved(target, TargetSource.DLQ_DEFAULT)
    return None


# A letter's route: the facts resolution reads, as one text value the freeze can group letters
# on (recovery.replay.freeze): failure origin, recorded replay origin and its source, and the
# consumer group a Kafka dead-letter writer recorded (the dry run names it as a reader).
ROUTE_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class Route:
    origin: str
    replay_origin: str
    replay_source: str
    consumer_group: str


def route_expression() -> Concat:
    """The route of each letter, in SQL. Letters captured before replay_origin was recorded use the
    broker origin the normalisation kept when a framework's origin replaced it."""
    text = TextField()
    sep, empty = Value(ROUTE_SEPARATOR, output_field=text), Value("", output_field=text)
    legacy_source = Case(
        When(failure_extras__has_key="broker_origin", then=Value("broker", output_field=text)),
        default=empty, output_field=text,
    )  # fmt: skip

    def field(value: Any) -> Replace:
        """No field may hold the separator: a header must not be able to forge the next field
        (a replay origin or its source "broker")."""
        return Replace(value, sep, empty)

    return Concat(
        field(Cast("origin", text)), sep,
        field(Coalesce(KT("failure_extras__replay_origin"), KT("failure_extras__broker_origin"), empty,
                       output_field=text)), sep,
        field(Coalesce(KT("failure_extras__replay_origin_source"), legacy_source, output_field=text)), sep,
        field(Coalesce(KT("failure_extras__consumer_group"), empty, output_field=text)),
        output_field=text,
    )  # fmt: skip


def parse_route(route: str) -> Route:
    origin, _, rest = (route or "").partition(ROUTE_SEPARATOR)
    replay_origin, _, rest = rest.partition(ROUTE_SEPARATOR)
    replay_source, _, group = rest.partition(ROUTE_SEPARATOR)
    return Route(origin, replay_origin, replay_source, group)


def resolve_route(plan: ReplayPlan, dlq: DeadLetterQueue, route: str) -> Resolved | None:
    parsed = parse_route(route)
    return resolve(plan, dlq, parsed.origin, parsed.replay_origin, parsed.replay_source)


def _from_origin(dlq: DeadLetterQueue, origin: str) -> dict[str, Any] | None:
    kind, _, rest = origin.partition(":")
    rest = rest.strip()
    if not rest:
        return None
    if kind == "queue":  # a queue or topic name a framework recorded, on the DLQ's own broker
        return _named(dlq, rest)
    if kind != dlq.broker.kind:
        return None  # celery:/masstransit:/... name a task or endpoint, not a place to publish to
    if kind == BrokerKind.KAFKA:
        return target_json(dlq.broker_id, rest)
    if kind == BrokerKind.RABBITMQ:
        return _amqp(dlq, rest)
    if kind == BrokerKind.SQS:
        url = _sqs_url(dlq.address, rest)
        return target_json(dlq.broker_id, url) if url else None
    return None


def _named(dlq: DeadLetterQueue, name: str) -> dict[str, Any] | None:
    """A bare queue (or topic) name on the DLQ's broker."""
    kind = dlq.broker.kind
    if kind == BrokerKind.RABBITMQ:
        return target_json(dlq.broker_id, "", name, dlq.vhost)
    if kind == BrokerKind.KAFKA:
        return target_json(dlq.broker_id, name)
    if kind == BrokerKind.SQS:
        url = _sqs_url(dlq.address, f"arn:aws:sqs:::{name}")
        return target_json(dlq.broker_id, url) if url else None
    return None


def _amqp(dlq: DeadLetterQueue, rest: str) -> dict[str, Any] | None:
    """'exchange=X routing_key=a,b queue=Q' (as recovery.metadata writes it): the queue when the
    record names it (x-death: where it was dead-lettered from), else the exchange and first key."""
    parts = dict(part.split("=", 1) for part in rest.split(" ") if "=" in part)
    exchange = parts.get("exchange")
    keys = [k for k in parts.get("routing_key", "").split(",") if k]
    queue = parts.get("queue") or (keys[0] if exchange == "(default)" and keys else "")
    if queue:
        return target_json(dlq.broker_id, "", queue, dlq.vhost)
    if exchange is not None and exchange != "(default)" and keys:
        return target_json(dlq.broker_id, exchange, keys[0], dlq.vhost)
    return None


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
