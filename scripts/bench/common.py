"""Shared by the benchmarks: a throwaway database, a measured child process, report lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
BENCH_DB = "dlq_console_bench"


def _url(database_url: str, name: str) -> str:
    return database_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def bench_database() -> Iterator[dict[str, str]]:
    """A fresh, migrated `dlq_console_bench` database; yields the environment for manage.py
    children (production-like settings) and drops the database afterwards."""
    admin = _url(os.environ["DATABASE_URL"], "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    env = {
        **os.environ,
        "DATABASE_URL": _url(os.environ["DATABASE_URL"], BENCH_DB),
        "DEBUG": "0",
        "HTTPS_ONLY": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-" + "s" * 50),
        "AUDIT_HMAC_KEY": os.environ.get("AUDIT_HMAC_KEY", "bench-audit-key-" + "k" * 32),
        "DJANGO_SETTINGS_MODULE": "console.settings",
    }
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        yield env
    finally:
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `manage.py ARGS`; return (seconds, peak RSS of that process in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"manage.py {' '.join(args)} failed ({code}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def report(lines: list[str], name: str, value: float, unit: str) -> None:
    line = f"BENCH {name} {value:.2f} {unit}" if value < 10 else f"BENCH {name} {value:.0f} {unit}"
    print(line, flush=True)
    lines.append(line)
