"""`manage.py audit_verify`: recompute the audit chain and report the first broken link;
`--file F` checks an exported file offline (no database needed) against its signed trailer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from recovery.audit.export import verify_export_file
from recovery.audit.verification import verify_chain


class Command(BaseCommand):
    help = "Verify the audit chain in the database, or an exported file with --file."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--file", type=Path, help="an exported .jsonl or .csv file to verify offline")
        parser.add_argument("--key-file", type=Path, help="read the audit key from this file, not AUDIT_HMAC_KEY")

    def handle(self, *args: Any, **options: Any) -> None:
        key = settings.AUDIT_HMAC_KEY
        if options["key_file"]:
            key = options["key_file"].read_text().strip().encode()
        if options["file"]:
            report = verify_export_file(options["file"], key)
            if not report.ok:
                raise CommandError(f"BROKEN: {report.message}")
            self.stdout.write(self.style.SUCCESS(f"OK: {report.message}"))
            return
        chain = verify_chain()
        if not chain.ok:
            raise CommandError(f"BROKEN at #{chain.first_broken_seq}: {chain.message}")
        self.stdout.write(self.style.SUCCESS(f"OK: {chain.message}"))
