"""Set-up for the replay benchmark (scripts/bench/replay.py), kept out of its measured time: dead
letters written straight into the bench database with one INSERT ... SELECT (standing in for a
capture: the capture benchmark measures that), plans drafted, submitted and approved through the
services (four eyes: an operator authors, an approver approves), and warm worker processes.
"""

from __future__ import annotations

import select
import subprocess
import sys
import uuid
from typing import Any

from scripts.bench.common import ROOT

# 1 KiB JSON bodies, one per row, with the headers and properties a captured RabbitMQ message keeps.
_LETTERS = """
INSERT INTO recovery_deadletter (dlq_id, identity, body, body_size, content_type, content_hash, headers, properties,
    captured_at, state, times_seen, origin, reason, error_class, error_message, stack_trace, source_message_id,
    failure_extras, category, disposition)
SELECT %(dlq)s, 'bench-' || g, b.body, length(b.body), 'application/json', encode(sha256(b.body), 'hex'),
    '{"x-exception-class": "TimeoutError"}'::jsonb, jsonb_build_object('message_id', 'bench-' || g), now(),
    'captured', 1, '', 'rejected', 'TimeoutError', 'upstream timed out after 30 s', '', 'bench-' || g, '{}'::jsonb,
    'transient', 'replay'
FROM generate_series(1, %(count)s) AS g,
LATERAL (SELECT convert_to(rpad('{"order": ' || g || ', "pad": "', 1021, 'x') || '"}' || chr(10), 'UTF8') AS body) b
"""


def users() -> tuple[Any, Any]:
    """(an operator who authors and starts plans, an approver who is not the author)."""
    from django.contrib.auth import get_user_model

    from recovery.permissions import Role, role_groups

    groups = role_groups()
    made = []
    for role in (Role.OPERATOR, Role.APPROVER):
        user = get_user_model().objects.create_user(username=f"bench-{role.value}", password=None)
        user.groups.set([groups[role]])
        made.append(user)
    return made[0], made[1]


def letters(broker: Any, count: int, tag: str) -> Any:
    """A DLQ row on ``broker`` holding ``count`` replayable dead letters of 1 KiB."""
    from django.db import connection

    from recovery.models import DeadLetterQueue

    dlq = DeadLetterQueue.objects.create(
        broker=broker, name=f"bench-{tag}-{uuid.uuid4().hex[:6]}", address=f"bench-{tag}", capture_interval=0
    )
    with connection.cursor() as cursor:
        cursor.execute(_LETTERS, {"dlq": dlq.pk, "count": count})
        assert cursor.rowcount == count
    return dlq


def approved_plan(author: Any, approver: Any, dlq: Any, broker: Any, *, address: str = "", routing_key: str = "",
                  rate: int, batch: int, workers: int) -> Any:  # fmt: skip
    """A plan over every letter of ``dlq`` to one target: no canary, no ramp, no verification step."""
    from recovery.replay import services
    from recovery.triage.filters import LetterFilter
    from recovery.triage.services import plan_draft_create

    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name=f"bench {dlq.name}")
    changes = {"target_broker": broker, "target_address": address, "target_routing_key": routing_key,
               "rate_per_second": rate, "batch_size": batch, "workers": workers, "canary_count": 0,
               "ramp_steps": [], "stop_conditions": [], "verifications": []}  # fmt: skip
    plan = services.plan_update(actor=author, plan=plan, changes=changes)
    plan = services.plan_submit(actor=author, plan=plan)
    return services.plan_approve(actor=approver, plan=plan)


class WarmWorkers:
    """Worker processes (scripts/bench/replay_worker_warm.py) started before their runs exist."""

    def __init__(self, env: dict[str, str], count: int) -> None:
        script = str(ROOT / "scripts" / "bench" / "replay_worker_warm.py")
        self.procs = [
            subprocess.Popen(
                [sys.executable, script], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in range(count)
        ]
        for index in range(count):
            assert self._line(index, 120) == "ready"

    def _line(self, index: int, timeout: float) -> str:
        proc = self.procs[index]
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise SystemExit(f"warm worker {index} did not answer within {timeout:g} s")
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"warm worker {index} exited ({proc.wait()})")
        return line.strip()

    def start(self, index: int, run_id: int, worker: int) -> None:
        self.procs[index].stdin.write(f"{run_id} {worker}\n")
        self.procs[index].stdin.flush()

    def wait(self, index: int, timeout: float = 300) -> str:
        line = self._line(index, timeout)
        assert line.startswith("done"), line
        return line

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
