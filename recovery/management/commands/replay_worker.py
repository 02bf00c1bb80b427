"""`manage.py replay_worker RUN [--worker N]`: run one worker of a replay run in this process,
in the foreground (the same loop the job backends run). Useful to drain a run by hand, and the
fault tests kill it with SIGKILL mid-batch."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from recovery.models import ReplayRun
from recovery.replay.engine import Worker


class Command(BaseCommand):
    help = "Run one worker of a replay run in the foreground until the run pauses, stops or ends."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("run", type=int, help="the run's id")
        parser.add_argument("--worker", type=int, default=0, help="worker number (0 also verifies at the end)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not ReplayRun.objects.filter(pk=options["run"]).exists():
            raise CommandError(f"no replay run {options['run']}")
        outcome = Worker(options["run"], options["worker"]).run()
        run = ReplayRun.objects.get(pk=options["run"])
        self.stdout.write(f"run {run.pk}: {outcome}; {run.published} of {run.total} published, {run.failed} failed")
