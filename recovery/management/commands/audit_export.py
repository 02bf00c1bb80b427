"""`manage.py audit_export`: stream the audit trail (filtered) to a file or stdout, as CSV or
JSON Lines, ending with a signed trailer. The export itself is audited (actor system:cli)."""

from __future__ import annotations

import getpass
import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from recovery.audit.export import FORMATS, AuditFilters, export_lines
from recovery.audit.services import audit_export_start
from recovery.models import AuditAction


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not an ISO date or date-time") from None
    return parsed if parsed.tzinfo else timezone.make_aware(parsed, timezone.get_current_timezone())


class Command(BaseCommand):
    help = "Export audit events as CSV or JSON Lines with a signed trailer."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")
        parser.add_argument("--since", type=_when, help="events at or after (ISO date-time)")
        parser.add_argument("--until", type=_when, help="events before (ISO date-time)")
        parser.add_argument("--actor", default="", help="username or system:<name>")
        parser.add_argument("--action", default="", choices=["", *AuditAction.values])
        parser.add_argument("--object-type", default="")
        parser.add_argument("--object-id", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = AuditFilters(
            since=options["since"],
            until=options["until"],
            actor=options["actor"],
            action=options["action"],
            object_type=options["object_type"],
            object_id=options["object_id"],
        )
        plan = audit_export_start(actor=f"cli:{getpass.getuser()}", filters=filters, fmt=options["format"])
        out = open(options["output"], "w", encoding="utf-8", newline="") if options["output"] else sys.stdout  # noqa: SIM115
        try:
            for line in export_lines(plan):
                out.write(line)
        finally:
            if out is not sys.stdout:
                out.close()
        if options["output"]:
            self.stderr.write(f"exported up to signed head #{plan.checkpoint.seq} to {options['output']}")
