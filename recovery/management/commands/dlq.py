"""`manage.py dlq list | add | discover BROKER`: manage dead-letter queues from the shell
(admin actions, audited as system:cli)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from recovery.brokers.selectors import broker_candidates
from recovery.brokers.services import dlq_save
from recovery.errors import RecoveryError
from recovery.management.commands.broker import cli_actor
from recovery.models import Broker, DeadLetterQueue


class Command(BaseCommand):
    help = "List, add or discover dead-letter queues."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        add = sub.add_parser("add")
        add.add_argument("--broker", required=True)
        add.add_argument("--name", required=True)
        add.add_argument("--address", required=True, help="SQS queue URL, RabbitMQ queue, Kafka topic")
        add.add_argument("--vhost", default="", help="RabbitMQ vhost (default: the broker URL's)")
        add.add_argument("--group", default="", help="Kafka consumer group for capture")
        add.add_argument("--target", default="", help="default replay target")
        add.add_argument("--routing-key", default="")
        add.add_argument("--interval", type=int, default=60, help="seconds between captures (0 = on demand)")
        add.add_argument("--batch", type=int, default=100)
        add.add_argument("--sources", default="", help="comma-separated source queues/topics")
        add.add_argument("--header-mapping", default="{}", help='JSON, e.g. {"error_class": "x-exception-class"}')
        discover = sub.add_parser("discover")
        discover.add_argument("broker")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for dlq in DeadLetterQueue.objects.select_related("broker").order_by("name"):
                self.stdout.write(f"{dlq.name}\t{dlq.broker.name}\t{dlq.address}\tevery {dlq.capture_interval} s")
            return
        broker = Broker.objects.filter(name=options["broker"]).first()
        if broker is None:
            raise CommandError(f"no broker named {options['broker']!r}")
        if action == "discover":
            try:
                candidates = broker_candidates(broker)
            except RecoveryError as exc:
                raise CommandError(str(exc)) from None
            for candidate in candidates:
                sources = ", ".join(candidate.sources) or "-"
                depth = "?" if candidate.depth is None else candidate.depth
                self.stdout.write(f"{candidate.address.name}\tdepth {depth}\tsources {sources}")
            return
        try:
            mapping = json.loads(options["header_mapping"])
        except ValueError as exc:
            raise CommandError(f"--header-mapping is not JSON: {exc}") from None
        data = {
            "broker": broker,
            "name": options["name"],
            "address": options["address"],
            "vhost": options["vhost"],
            "consumer_group": options["group"],
            "replay_target": options["target"],
            "replay_routing_key": options["routing_key"],
            "capture_interval": options["interval"],
            "capture_batch_size": options["batch"],
            "sources": [s.strip() for s in options["sources"].split(",") if s.strip()],
            "header_mapping": mapping,
        }
        try:
            dlq = dlq_save(actor=cli_actor(), data=data)
        except RecoveryError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"dead-letter queue {dlq.name} added ({dlq.capture_mode})"))
