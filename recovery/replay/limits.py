"""Bounds of a rate plan: what each broker accepts per batch and per second, and what the
console will schedule. Checked when a plan is saved and again, against its resolved targets,
when it is submitted (issue 6, bad input: an absurd rate or a batch above the broker's limit)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recovery.errors import InvalidInput
from recovery.models import BrokerKind

# Per target broker kind: (largest batch, highest rate in msg/s the console will plan for).
# SQS: SendMessageBatch takes at most 10 entries. RabbitMQ and Kafka figures are what one
# broker node sustains for small persistent messages; a plan above them melts the target.
BROKER_LIMITS: dict[str, tuple[int, int]] = {
    BrokerKind.SQS: (10, 3_000),
    BrokerKind.RABBITMQ: (1_000, 50_000),
    BrokerKind.KAFKA: (10_000, 100_000),
}
MAX_WORKERS = 16
MAX_APPROVALS = 5
MAX_WINDOW_SECONDS = 24 * 3600


def _int(plan: dict[str, Any], name: str, low: int, high: int, label: str) -> int:
    value = plan.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{label}: a whole number")
    if not low <= value <= high:
        raise InvalidInput(f"{label}: between {low:,} and {high:,} (got {value:,})")
    return value


def validate_rate_plan(plan: dict[str, Any], *, target_kinds: Iterable[str] = ()) -> None:
    """Raise InvalidInput naming the first bad value. ``target_kinds``: brokers the plan
    publishes to (known once items are frozen), whose limits then apply."""
    kinds = set(target_kinds)
    override = plan.get("target_broker")
    if override is not None:
        kinds.add(override.kind)
    max_batch = min((BROKER_LIMITS[k][0] for k in kinds), default=10_000)
    max_rate = min((BROKER_LIMITS[k][1] for k in kinds), default=100_000)
    rate = _int(plan, "rate_per_second", 1, max_rate, "rate (messages per second)")
    batch = _int(
        plan, "batch_size", 1, max_batch, "batch size" + (f" (the {'/'.join(sorted(kinds))} limit)" if kinds else "")
    )
    _int(plan, "workers", 1, MAX_WORKERS, "workers")
    _int(plan, "canary_count", 0, 1_000_000, "canary size")
    _int(plan, "canary_window_seconds", 0, MAX_WINDOW_SECONDS, "canary verification window (s)")
    _int(plan, "ramp_interval_seconds", 0, MAX_WINDOW_SECONDS, "ramp interval (s)")
    _int(plan, "required_approvals", 1, MAX_APPROVALS, "required approvals")
    if batch > rate:
        raise InvalidInput(f"batch size {batch} is above the rate {rate}/s: one batch would take over a second")
    steps = plan.get("ramp_steps") or []
    if not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise InvalidInput("ramp steps: a list of whole percentages, e.g. 10, 50, 100")
    if any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise InvalidInput("ramp steps: rising percentages between 1 and 100, e.g. 10, 50, 100")
    if plan.get("target_broker") is not None and not (plan.get("target_address") or plan.get("target_routing_key")):
        raise InvalidInput("target override: name the queue, exchange or topic on the chosen broker")
