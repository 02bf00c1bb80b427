"""Benchmark: stream an export of N audit events (default 1,000,000) and measure its rate and
the exporting process's peak RSS (target < 200 MB), then check the file offline and the chain in
the database. Runs against a throwaway database `dlq_console_bench` on the local PostgreSQL.

Prints `BENCH <name> <value> <unit>` lines and returns them for docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.bench.common import bench_database, report, run_measured  # noqa: E402


def seed(url: str, count: int) -> float:
    """COPY a valid chain of ``count`` events (computed here with the production canonical form)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    import django

    django.setup()
    from recovery.audit.canonical import GENESIS_HASH, canonical_json, event_content, event_hash, format_time

    start = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    actions = ["auth.login", "user.roles_changed", "broker.configured", "audit.exported"]
    prev = GENESIS_HASH
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        columns = ("seq, at, actor_id, actor_name, client_ip, user_agent, request_id, trace_id, action, object_type,"
                   " object_id, summary, before, after, reason, prev_hash, hash")  # fmt: skip
        with cur.copy(f"COPY recovery_auditevent ({columns}) FROM STDIN") as copy:
            for seq in range(1, count + 1):
                at = base + timedelta(milliseconds=seq * 37)
                before = {"roles": ["viewer"]} if seq % 3 == 0 else None
                after = {"roles": ["operator", "viewer"], "n": seq}
                content = event_content(
                    seq=seq, at=at, actor_id=None, actor_name=f"system:bench{seq % 17}", client_ip="10.0.0.1",
                    user_agent="bench/1.0", request_id=hashlib.md5(str(seq).encode()).hexdigest(),  # noqa: S324
                    trace_id="", action=actions[seq % 4], object_type="recovery.broker", object_id=str(seq % 1000),
                    summary=f"bench event {seq} with a realistic amount of summary text", before=before,
                    after=after, reason="" if seq % 5 else "scheduled maintenance", prev_hash=prev,
                )  # fmt: skip
                digest = event_hash(content)
                copy.write_row((
                    seq, format_time(at), None, content["actor_name"], content["client_ip"], content["user_agent"],
                    content["request_id"], "", content["action"], content["object_type"], content["object_id"],
                    content["summary"], canonical_json(before) if before is not None else None,
                    canonical_json(after), content["reason"], prev, digest,
                ))  # fmt: skip
                prev = digest
        conn.commit()
    return time.perf_counter() - start


def main(count: int) -> list[str]:
    lines: list[str] = []
    with bench_database() as env:
        seconds = seed(env["DATABASE_URL"], count)
        report(lines, "audit_seed_copy_rate", count / seconds, "events/s")
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("jsonl", "csv"):
                path = Path(tmp) / f"audit.{fmt}"
                elapsed, rss = run_measured(["audit_export", f"--format={fmt}", f"--output={path}"], env)
                report(lines, f"audit_export_{fmt}_events", count + 1, "events")
                report(lines, f"audit_export_{fmt}_rate", (count + 1) / elapsed, "events/s")
                report(lines, f"audit_export_{fmt}_peak_rss", rss, "MB")
                report(lines, f"audit_export_{fmt}_file_size", path.stat().st_size / 1e6, "MB")
                elapsed, rss = run_measured(["audit_verify", f"--file={path}"], env)
                report(lines, f"audit_verify_file_{fmt}_rate", (count + 1) / elapsed, "events/s")
                report(lines, f"audit_verify_file_{fmt}_peak_rss", rss, "MB")
        elapsed, rss = run_measured(["audit_verify"], env)
        report(lines, "audit_verify_chain_rate", (count + 2) / elapsed, "events/s")
        report(lines, "audit_verify_chain_peak_rss", rss, "MB")
    return lines


if __name__ == "__main__":
    main(int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000")))
