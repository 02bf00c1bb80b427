"""`manage.py capture DLQ [--max N]`: run one capture pass now, in this process, and print its
counts. Exits non-zero when the pass fails (after its retries)."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.errors import RecoveryError
from recovery.models import CaptureTrigger, DeadLetterQueue, JobState


class Command(BaseCommand):
    help = "Capture a dead-letter queue now (one pass, in this process)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("dlq", help="the DLQ's name")
        parser.add_argument("--max", type=int, default=None, help="stop after this many messages")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            dlq = DeadLetterQueue.objects.select_related("broker").get(name=options["dlq"])
        except DeadLetterQueue.DoesNotExist:
            names = ", ".join(DeadLetterQueue.objects.values_list("name", flat=True)) or "none configured"
            raise CommandError(f"no DLQ named {options['dlq']!r} (known: {names})") from None
        try:
            requested = capture_pass_request(actor=f"cli:{getpass.getuser()}", dlq=dlq, trigger=CaptureTrigger.CLI)
        except RecoveryError as exc:
            raise CommandError(str(exc)) from None
        done = capture_pass_run(pass_id=requested.pk, max_messages=options["max"])
        if done is None:
            raise CommandError("another worker took this pass")
        line = (
            f"{dlq.name}: received {done.received}, captured {done.captured}, already known {done.duplicates}, "
            f"oversize {done.oversize}, removed from the broker {done.removed}, attempts {done.attempts}"
        )
        if done.remaining:
            line += f"; {done.outcome} on the broker"
        if done.state == JobState.FAILED:
            raise CommandError(f"{line}; FAILED: {done.error}")
        self.stdout.write(self.style.SUCCESS(line))
