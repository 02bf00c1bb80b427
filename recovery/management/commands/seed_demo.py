"""Seed the local demo: one user per role and the local brokers as sources.

Passwords are printed once, when a user is created, and also kept in .local/demo-credentials
(mode 600) so that a later `make run` can point at them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from recovery.accounts.services import demo_users_ensure
from recovery.brokers.services import local_brokers_configure


class Command(BaseCommand):
    help = "Create demo users (one per role) and configure the local brokers as sources."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--credentials-file",
            default=str(Path(settings.BASE_DIR) / ".local" / "demo-credentials"),
            help="where new demo passwords are kept (mode 600)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = demo_users_ensure()
        brokers = local_brokers_configure()
        path = Path(options["credentials_file"])
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
