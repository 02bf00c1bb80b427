"""Seed real dead letters on the local brokers: producers publish a mix, buggy consumers fail half.

    .venv/bin/python -m scripts.demo.failing_consumers [--prefix demo] [--reset] [rabbitmq sqs kafka]

prints one JSON summary per broker: the DLQs (address, expected and actual depth, source queues,
default replay target) and what the console needs to configure them (RabbitMQ vhost and the
payments DLQ's header mapping, the SQS region, the Kafka capture consumer group).

Each seeder is idempotent: a DLQ already holding its expected messages is left alone, and
``reset=True`` deletes and recreates the queues/topics first. Connection details come from the
LOCAL_* environment variables written by scripts/services.sh (.local/env).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from scripts.demo.common import SeedError
from scripts.demo.kafka_apps import remove_kafka, seed_kafka
from scripts.demo.rabbitmq_apps import remove_rabbitmq, seed_rabbitmq
from scripts.demo.sqs_apps import remove_sqs, seed_sqs

__all__ = ["SEEDERS", "SeedError", "main", "remove_kafka", "remove_rabbitmq", "remove_sqs", "seed_all"]
__all__ += ["seed_kafka", "seed_rabbitmq", "seed_sqs"]

SEEDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "rabbitmq": seed_rabbitmq,
    "sqs": seed_sqs,
    "kafka": seed_kafka,
}


def seed_all(
    prefix: str = "demo", *, reset: bool = False, brokers: Sequence[str] = tuple(SEEDERS)
) -> list[dict[str, Any]]:
    """Run the seeders of ``brokers`` in order and return their summaries."""
    return [SEEDERS[broker](prefix, reset=reset) for broker in brokers]


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: seed the chosen brokers (all by default) and print the summaries as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo.failing_consumers",
        description="Publish a realistic message mix and let buggy consumers fail half of it into real DLQs.",
    )
    parser.add_argument("--prefix", default="demo", help="name prefix of the queues and topics (default: demo)")
    parser.add_argument("--reset", action="store_true", help="delete and recreate the queues/topics first")
    parser.add_argument("brokers", nargs="*", metavar="broker", help="rabbitmq, sqs and/or kafka (default: all)")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.brokers) - set(SEEDERS))
    if unknown:
        parser.error(f"unknown broker {', '.join(unknown)}: choose from {', '.join(SEEDERS)}")
    brokers = arguments.brokers or list(SEEDERS)
    try:
        summaries = seed_all(arguments.prefix, reset=arguments.reset, brokers=brokers)
    except SeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
