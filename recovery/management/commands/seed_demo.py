"""Seed the local demo: one user per role and the local brokers as sources.

Passwords are printed once, when a user is created, and also kept in .local/demo-credentials
(mode 600) so that a later `make run` can point at them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from recovery.accounts.services import demo_users_ensure
from recovery.brokers.services import dlq_save, local_brokers_configure
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.classification.services import default_rules_install
from recovery.errors import RecoveryError
from recovery.models import Broker, CaptureTrigger, DeadLetterQueue


class Command(BaseCommand):
    help = "Create demo users (one per role) and configure the local brokers as sources."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--dlqs",
            help="JSON summary written by `python -m scripts.demo.failing_consumers`: configure those DLQs "
            "on the local brokers and capture each once",
        )
        parser.add_argument(
            "--credentials-file",
            default=str(Path(settings.BASE_DIR) / ".local" / "demo-credentials"),
            help="where new demo passwords are kept (mode 600)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["credentials_file"])
        if path.exists() and not path.is_file():
            raise CommandError(f"--credentials-file {path} is not a regular file")
        users = demo_users_ensure()
        brokers = local_brokers_configure()
        new = {name: pw for name, pw in users.items() if pw}
        if new:
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = path.read_text().splitlines() if path.exists() else []
            kept = [line for line in lines if line.split(" ", 1)[0] not in new]
            path.write_text("\n".join(kept + [f"{n} {p}" for n, p in new.items()]) + "\n")
            os.chmod(path, 0o600)
            self.stdout.write(self.style.SUCCESS(f"Demo users created (shown once; also in {path}):"))
            for name, password in new.items():
                self.stdout.write(f"  {name:<16} {password}")
        existing = [name for name, pw in users.items() if not pw]
        if existing:
            self.stdout.write(f"Demo users already exist: {', '.join(existing)} (passwords in {path})")
        self.stdout.write(f"Brokers configured: {', '.join(b.name for b in brokers) or 'none'}")
        rules = default_rules_install(actor="seed_demo")
        self.stdout.write(f"Default classification rules installed: {len(rules)}")
        self._demo_drills(brokers)
        if options["dlqs"]:
            self._configure_dlqs(json.loads(Path(options["dlqs"]).read_text()))

    def _demo_drills(self, brokers: list[Broker]) -> None:
        """One drill per local broker every five minutes, defined by demo-operator and approved by
        demo-approver (four eyes), so the drill history fills within minutes of `make run`.
        A demo drill that exists is left as it is (and approved again if a change voided it)."""
        from django.contrib.auth import get_user_model

        from recovery.drills.selectors import drill_approval_current
        from recovery.drills.services import drill_approve, drill_create
        from recovery.models import Drill

        users = get_user_model().objects.in_bulk(["demo-operator", "demo-approver"], field_name="username")
        made = []
        for broker in brokers:
            name = f"demo-{broker.kind}"
            try:
                drill = Drill.objects.filter(name=name).first() or drill_create(
                    actor=users["demo-operator"],
                    data={"name": name, "broker": broker, "schedule": "*/5 * * * *", "timeout_seconds": 180,
                          "description": "Demo drill seeded by `make run`: 6 messages, 2 transient, 1 poison."},
                )  # fmt: skip
                if drill_approval_current(drill) is None:
                    drill_approve(actor=users["demo-approver"], drill=drill, comment="demo drill, seeded")
            except RecoveryError as exc:
                self.stderr.write(f"demo drill {name} not ready: {exc}")
                continue
            made.append(drill.name)
        self.stdout.write(f"Demo drills (every 5 minutes, approved): {', '.join(made) or 'none'}")

    def _configure_dlqs(self, summary: list[dict[str, Any]]) -> None:
        """Create (or refresh) a DLQ row for every demo DLQ and capture it once."""
        for flow in summary:
            broker = Broker.objects.filter(name=f"local-{flow['broker']}").first()
            if broker is None:
                self.stderr.write(f"no local-{flow['broker']} broker configured; skipping its DLQs")
                continue
            for spec in flow["dlqs"]:
                address = spec["address"]
                name = slugify(f"{flow['broker']}-{address.rsplit('/', 1)[-1]}")[:64]
                data = {
                    "broker": broker,
                    "name": name,
                    "address": address,
                    "vhost": "" if flow.get("vhost", "/") == "/" else flow["vhost"],
                    "consumer_group": f"console-capture-{address}" if flow["broker"] == "kafka" else "",
                    "replay_target": spec.get("replay_target", ""),
                    "sources": spec.get("sources", []),
                    "header_mapping": spec.get("header_mapping", {}),
                    "capture_interval": 60,
                }
                if flow["broker"] == "rabbitmq":  # replay through the default exchange to the work queue
                    data["replay_target"], data["replay_routing_key"] = "", spec.get("replay_target", "")
                existing = DeadLetterQueue.objects.filter(name=name).first()
                dlq = dlq_save(actor="seed_demo", dlq=existing, data=data)
                requested = capture_pass_request(actor="seed_demo", dlq=dlq, trigger=CaptureTrigger.CLI)
                done = capture_pass_run(pass_id=requested.pk)
                outcome = done.error if done and done.error else f"{done.captured if done else 0} captured"
                self.stdout.write(f"  DLQ {name}: {outcome}")
