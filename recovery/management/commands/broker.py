"""`manage.py broker list | add | test`: manage broker connections from the shell (admin actions,
audited as system:cli). Credentials are given only as a reference (env:PREFIX or file:/path)."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from recovery.brokers.selectors import broker_connection_check
from recovery.brokers.services import broker_save
from recovery.errors import RecoveryError
from recovery.models import Broker, BrokerKind


def cli_actor() -> str:
    """The shell user, as a system actor (whoever can run manage.py already owns the install)."""
    return f"cli:{getpass.getuser()}"


class Command(BaseCommand):
    help = "List, add or test broker connections."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        add = sub.add_parser("add")
        add.add_argument("--name", required=True)
        add.add_argument("--kind", required=True, choices=BrokerKind.values)
        add.add_argument("--endpoint", default="")
        add.add_argument("--credentials-ref", default="", help="env:PREFIX or file:/path (never the secret itself)")
        add.add_argument("--options", default="{}", help='JSON object, e.g. {"region": "eu-west-1"}')
        test = sub.add_parser("test")
        test.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            for broker in Broker.objects.order_by("name"):
                ref = broker.credentials_ref or "-"
                self.stdout.write(f"{broker.name}\t{broker.kind}\t{broker.endpoint or '(AWS)'}\t{ref}")
            return
        if action == "test":
            broker = Broker.objects.filter(name=options["name"]).first()
            if broker is None:
                raise CommandError(f"no broker named {options['name']!r}")
            result = broker_connection_check(broker)
            if not result.ok:
                raise CommandError(f"{broker.name}: {result.message}")
            self.stdout.write(self.style.SUCCESS(f"{broker.name}: {result.message}"))
            return
        try:
            extra = json.loads(options["options"])
        except ValueError as exc:
            raise CommandError(f"--options is not JSON: {exc}") from None
        data = {
            "name": options["name"],
            "kind": options["kind"],
            "endpoint": options["endpoint"],
            "credentials_ref": options["credentials_ref"],
            "options": extra,
        }
        try:
            broker = broker_save(actor=cli_actor(), data=data)
        except RecoveryError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"broker {broker.name} added"))
