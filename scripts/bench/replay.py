"""Benchmark: the replay engine end to end on the real brokers (issue 6).

1. Throughput, per broker: N letters of 1 KiB (BENCH_REPLAY_MESSAGES, default 20,000; SQS:
   BENCH_REPLAY_SQS_MESSAGES, default 5,000, as LocalStack's ~2-4 ms per call would make 20,000 take
   over three minutes) replayed by one worker, then (fresh letters) by two (BENCH_REPLAY_WORKERS,
   default "1,2": the plan's workers; two is one per core here) at the broker's highest
   plannable rate and largest batch (recovery/replay/limits.py: RabbitMQ 50,000/s in batches of
   1,000, Kafka 100,000/s in 10,000, SQS 3,000/s in 10), beside a raw client move loop of N
   messages on the same broker in the same run (scripts/bench/replay_moves.py); ratio = replay
   rate / raw rate (target >= 0.7), per number of workers. Replay time: from the run's started_at
   (set by the start call, before it writes the run's ledger) to its move to verifying, once every
   ledger row is recorded (the last published_at would leave out the last batch's confirms and
   recording: published_at is when a batch was sent). Wall time: from the start call until the
   workers return with the run verified. Set-up is not measured: the letters
   are written into the bench database with SQL, the plan is approved through the services, and
   the worker process is started before the run (scripts/bench/replay_worker_warm.py).
2. RabbitMQ only: the shovel plugin moves N messages between two queues (a dynamic shovel,
   ack-mode on-confirm, src-delete-after queue-length), timed from its creation until the target
   holds them all and the source is empty; ratio = the faster replay's rate / shovel rate.
3. Rate accuracy through the engine: plans at 10, 100 and 1000 msg/s (plan batches of 1, 10 and 50;
   the engine sends at most a twentieth of the rate: 1, 5 and 50), 2 workers each (`manage.py
   replay_worker RUN --worker N` processes), to RabbitMQ queues, each for
   BENCH_REPLAY_ACCURACY_SECONDS (default 25) from its first publish, then aborted. One rate after
   the other: run at once (BENCH_REPLAY_ACCURACY_CONCURRENT=1), six workers saturate two cores and
   the 1000 msg/s run falls far below plan. From the ledger's published_at (one timestamp per
   batch: when it went to the broker, which then confirmed it): every sliding 10 s window's
   deviation from plan (target within +-2%) and the fullest sliding 1 s window (target <= 110%).
4. Pause latency: a run at 500 msg/s (batches of 50, 2 warm workers) to RabbitMQ is paused
   BENCH_REPLAY_PAUSES times (default 20) through the service `run_pause`, each time at a random
   moment 0.2-0.7 s after publishing restarted, and resumed in between. Per pause: from its commit
   to the run's last published_at, 0 when nothing was published after it (target p95 <= 1 s); the
   batches recorded after it (at most one in flight per worker); the time until both workers
   returned.

Standalone: `.venv/bin/python scripts/bench/replay.py` (reads .local/env like `make bench`);
BENCH_REPLAY_PARTS (throughput,accuracy,pause) and BENCH_REPLAY_BROKERS (rabbitmq,kafka,sqs) pick
parts. It uses its own database and Redis database (BENCH_REDIS_DB, default 2), so no `make run`
or test worker takes the jobs its runs enqueue; those are emptied at the end.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from bisect import bisect_left
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.bench import replay_moves as moves  # noqa: E402
from scripts.bench import replay_setup as setup  # noqa: E402
from scripts.bench.common import ROOT, bench_database, report  # noqa: E402

ACCURACY_CASES = [(10, 1), (100, 10), (1000, 50)]  # (msg/s, batch size)
PAUSE_RATE, PAUSE_BATCH = 500, 50


def _load_env() -> None:
    """Standalone runs read the local services' URLs as `make bench` does (it sources .local/env);
    then the bench's own Redis database, so no `make run` or test worker ever takes its jobs."""
    path = ROOT / ".local" / "env"
    if "REDIS_URL" not in os.environ and path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                os.environ.setdefault(key.strip(), value.strip())
    parts = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = urlunsplit(parts._replace(path=f"/{os.environ.get('BENCH_REDIS_DB', '2')}"))


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _published(run_id: int) -> tuple[float, float, int]:
    """(started_at, last published_at, rows published) of a run, as epoch seconds."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM r.started_at), extract(epoch FROM max(l.published_at)), count(l.published_at) "
            "FROM recovery_replayrun r JOIN recovery_ledgerentry l ON l.run_id = r.id WHERE r.id = %s "
            "GROUP BY r.started_at",
            [run_id],
        )
        started, last, count = cursor.fetchone()
    return float(started), float(last or 0), count


def _verifying_at(run_id: int) -> float:
    """When the run moved to verifying: its last phase event, written once every row is recorded.
    A batch's published_at is when it was sent, before its confirms and its recording (a 10,000-row
    batch takes a while), so the last published_at alone would leave those out."""
    from recovery.models import RunEvent

    return _epoch(RunEvent.objects.filter(run_id=run_id, kind="phase").latest("at", "id").at)


# ----------------------------------------------------------------------------- 1 and 2: throughput
def _replay(
    ctx: dict, dlq, *, workers: int, address: str = "", routing_key: str = "", rate: int, batch: int
) -> tuple[float, float]:
    """Start a plan over ``dlq`` to a target on its broker and let ``workers`` warm workers run it:
    (seconds from started_at to the move to verifying, wall seconds from the start call to the
    workers' return with the run verified)."""
    from recovery.models import RunState
    from recovery.replay import services

    plan = setup.approved_plan(ctx["operator"], ctx["approver"], dlq, dlq.broker, address=address,
                               routing_key=routing_key, rate=rate, batch=batch, workers=workers)  # fmt: skip
    begin = time.perf_counter()
    run = services.run_start(actor=ctx["operator"], plan=plan)
    for worker in range(workers):
        ctx["warm"].start(worker, run.pk, worker)
    for worker in range(workers):
        ctx["warm"].wait(worker)
    wall = time.perf_counter() - begin
    run.refresh_from_db()
    assert (run.state, run.published, run.failed) == (RunState.COMPLETED_NOT_VERIFIED, run.total, 0), (
        run.state,
        run.published,
    )
    started, last, count = _published(run.pk)
    assert count == run.total
    verifying = _verifying_at(run.pk)
    assert verifying >= last, "the run moved to verifying before its last publish"
    return verifying - started, wall, _letters_replayed_at(run.pk) - verifying


def _letters_replayed_at(run_id: int) -> float:
    """When the run's last chunk of letters became replayed (its letters.replayed audit events are
    written after the move to verifying, off the publishing path: recovery.letters.lifecycle)."""
    from recovery.models import AuditAction, AuditEvent

    events = AuditEvent.objects.filter(action=AuditAction.LETTERS_REPLAYED, object_id=str(run_id))
    return _epoch(events.latest("at", "id").at)


def _rabbitmq(ctx: dict, n: int, dlqs: dict) -> dict[str, float]:
    source, raw_target = moves.rabbit_queue(), moves.rabbit_queue()
    times = {}
    try:
        moves.rabbit_fill(source, n)
        begin = time.perf_counter()
        moves.rabbit_move(source, raw_target, n, batch=1000)
        times["raw"] = time.perf_counter() - begin
        assert moves.rabbit_depth(raw_target) == n, "the raw move's target does not hold every message"
        moves.rabbit_delete(raw_target)
        for workers, dlq in dlqs.items():
            target = moves.rabbit_queue()
            times[workers] = _replay(ctx, dlq, workers=workers, routing_key=target, rate=50_000, batch=1000)
            assert moves.rabbit_depth(target) == n, "the replay target does not hold every letter"
            moves.rabbit_delete(target)
        moves.shovel_ready()
        moves.rabbit_fill(source, n)
        shovel_target = moves.rabbit_queue()
        try:
            times["shovel"] = moves.shovel_move(source, shovel_target, n)
        finally:
            moves.rabbit_delete(shovel_target)
    finally:
        moves.rabbit_delete(source, raw_target)
    return times


def _kafka(ctx: dict, n: int, dlqs: dict) -> dict[str, float]:
    kafka = moves.Kafka()
    source, raw_target = kafka.topic(), kafka.topic()
    targets = [kafka.topic() for _ in dlqs]
    times = {}
    try:
        kafka.fill(source, n)
        begin = time.perf_counter()
        kafka.move(source, raw_target, n, batch=10_000)
        times["raw"] = time.perf_counter() - begin
        for (workers, dlq), target in zip(dlqs.items(), targets, strict=True):
            times[workers] = _replay(ctx, dlq, workers=workers, address=target, rate=100_000, batch=10_000)
            assert kafka.count(target, n) == n, "the replay target does not hold every letter"
    finally:
        kafka.delete(source, raw_target, *targets)
    return times


def _sqs(ctx: dict, n: int, dlqs: dict) -> dict[str, float]:
    sqs = moves.Sqs()
    source, raw_target = sqs.queue(), sqs.queue()
    times = {}
    try:
        sqs.fill(source, n)
        begin = time.perf_counter()
        sqs.move(source, raw_target, n)
        times["raw"] = time.perf_counter() - begin
        sqs.delete(raw_target)
        for workers, dlq in dlqs.items():
            target = sqs.queue()
            try:
                times[workers] = _replay(ctx, dlq, workers=workers, address=target, rate=3_000, batch=10)
                assert sqs.depth(target) == n, "the replay target does not hold every letter"
            finally:
                sqs.delete(target)
    finally:
        sqs.delete(source)
    return times


def _throughput(ctx: dict, kind: str, lines: list[str]) -> None:
    """Raw move loop, then the replay of as many letters by each number of workers (and for
    RabbitMQ the shovel), one broker, side by side."""
    n = ctx["sqs_count"] if kind == "sqs" else ctx["count"]
    dlqs = {workers: setup.letters(ctx["brokers"][kind], n, f"{kind}-{workers}w") for workers in ctx["workers"]}
    times = {"rabbitmq": _rabbitmq, "kafka": _kafka, "sqs": _sqs}[kind](ctx, n, dlqs)
    report(lines, f"replay_{kind}_messages", n, "messages")
    report(lines, f"replay_{kind}_raw_move_rate", n / times["raw"], "msg/s")
    for workers in ctx["workers"]:
        seconds, wall, settle = times[workers]
        report(lines, f"replay_{kind}_rate_{workers}w", n / seconds, "msg/s")
        report(lines, f"replay_{kind}_ratio_{workers}w", times["raw"] / seconds, "x")
        report(lines, f"replay_{kind}_wall_seconds_{workers}w", wall, "s")
        report(lines, f"replay_{kind}_letters_replayed_seconds_{workers}w", settle, "s")
    if "shovel" in times:
        best = min(times[workers][0] for workers in ctx["workers"])
        report(lines, f"replay_{kind}_shovel_rate", n / times["shovel"], "msg/s")
        report(lines, f"replay_{kind}_shovel_ratio", times["shovel"] / best, "x")


# ----------------------------------------------------------------------------- 3: rate accuracy
def _windows(stamps: list[float], counts: list[int], start: float, end: float, length: float) -> list[int]:
    """Messages in every window [t, t + length) within [start, end], at each t where the count
    can change: a stamp leaving (t = stamp, and just after) or entering (t = stamp - length)."""
    prefix = [0, *accumulate(counts)]

    def count(t: float) -> int:
        return prefix[bisect_left(stamps, t + length)] - prefix[bisect_left(stamps, t)]

    starts = {start, end - length}
    for stamp in stamps:
        for edge in (stamp, stamp - length):
            starts.update(t for t in (edge, edge + 1e-6) if start <= t <= end - length)
    return [count(t) for t in starts]


def _batches(run_id: int, start: float, end: float) -> tuple[list[float], list[int]]:
    """Recorded batches of a run inside [start, end]: their published_at and sizes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM published_at)::float8, count(*) FROM recovery_ledgerentry WHERE run_id = %s "
            "AND published_at IS NOT NULL GROUP BY published_at ORDER BY published_at",
            [run_id],
        )
        rows = [(t, n) for t, n in cursor.fetchall() if start <= t <= end]
    return [t for t, _ in rows], [n for _, n in rows]


def _first_publish(run_id: int) -> float | None:
    from recovery.models import LedgerEntry

    first = LedgerEntry.objects.filter(run_id=run_id, published_at__isnull=False).order_by("published_at").first()
    return _epoch(first.published_at) if first else None


def _accuracy_group(ctx: dict, cases: list[tuple[int, int]]) -> dict[int, tuple[int, float]]:
    """Run ``cases`` at the same time, each for ``accuracy_seconds`` from its first publish, then
    abort them: {rate: (run id, first published_at)}."""
    from recovery.replay import services

    seconds = ctx["accuracy_seconds"]
    broker = ctx["brokers"]["rabbitmq"]
    queues, runs, procs = [], {}, []
    try:
        for rate, batch in cases:
            dlq = setup.letters(broker, int(rate * (seconds + 20)), f"rate-{rate}")
            queues.append(moves.rabbit_queue())
            plan = setup.approved_plan(ctx["operator"], ctx["approver"], dlq, broker, routing_key=queues[-1],
                                       rate=rate, batch=batch, workers=2)  # fmt: skip
            runs[rate] = services.run_start(actor=ctx["operator"], plan=plan)
        for run in runs.values():
            for worker in (0, 1):
                procs.append(subprocess.Popen(
                    [sys.executable, "manage.py", "replay_worker", str(run.pk), "--worker", str(worker)],
                    cwd=ROOT, env=ctx["env"], stdout=subprocess.DEVNULL,
                ))  # fmt: skip
        first: dict[int, float] = {}
        deadline = time.monotonic() + 60
        while len(first) < len(runs) or any(run.state == "running" for run in runs.values()):
            for rate, run in runs.items():
                if rate not in first:
                    found = _first_publish(run.pk)
                    if found is not None:
                        first[rate] = found
                elif time.time() > first[rate] + seconds + 0.5 and run.state == "running":
                    runs[rate] = services.run_abort(actor=ctx["operator"], run=run, reason="benchmark over")
            assert len(first) == len(runs) or time.monotonic() < deadline, "a run published nothing in 60 s"
            time.sleep(0.05)
        for proc in procs:
            assert proc.wait(30) == 0, "a replay worker failed"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        moves.rabbit_delete(*queues)
    return {rate: (run.pk, first[rate]) for rate, run in runs.items()}


def _accuracy(ctx: dict, lines: list[str]) -> None:
    seconds = ctx["accuracy_seconds"]
    if ctx["accuracy_concurrent"]:
        measured = _accuracy_group(ctx, ACCURACY_CASES)
    else:
        measured = {}
        for case in ACCURACY_CASES:
            measured.update(_accuracy_group(ctx, [case]))
    report(lines, "replay_accuracy_seconds_per_rate", seconds, "s")
    report(lines, "replay_accuracy_rates_at_once", len(ACCURACY_CASES) if ctx["accuracy_concurrent"] else 1, "runs")
    for rate, batch in ACCURACY_CASES:
        run_id, start = measured[rate]
        end = start + seconds
        stamps, counts = _batches(run_id, start, end)
        deviations = [(c - rate * 10) / (rate * 10) * 100 for c in _windows(stamps, counts, start, end, 10.0)]
        one = _windows(stamps, counts, start, end, 1.0)
        report(lines, f"replay_accuracy_{rate}_batch", batch, "messages")
        report(lines, f"replay_accuracy_{rate}_mean_rate", sum(counts) / seconds, "msg/s")
        report(lines, f"replay_accuracy_{rate}_worst_10s_window_deviation", max(abs(d) for d in deviations), "%")
        report(lines, f"replay_accuracy_{rate}_lowest_10s_window_deviation", min(deviations), "%")
        report(lines, f"replay_accuracy_{rate}_highest_10s_window_deviation", max(deviations), "%")
        report(lines, f"replay_accuracy_{rate}_max_1s_window", max(one) / rate * 100, "%_of_plan")


# ----------------------------------------------------------------------------- 4: pause latency
def _pauses(ctx: dict, lines: list[str]) -> None:
    from recovery.models import ReplayRun
    from recovery.replay import services

    pauses = ctx["pauses"]
    broker = ctx["brokers"]["rabbitmq"]
    queue = moves.rabbit_queue()
    warm = ctx["warm"]
    latencies, after, stops = [], [], []
    try:
        dlq = setup.letters(broker, PAUSE_RATE * (pauses + 10), "pause")
        plan = setup.approved_plan(ctx["operator"], ctx["approver"], dlq, broker, routing_key=queue,
                                   rate=PAUSE_RATE, batch=PAUSE_BATCH, workers=2)  # fmt: skip
        run = services.run_start(actor=ctx["operator"], plan=plan)
        rng = random.Random(6)  # noqa: S311 - when to pause, not security
        for index in range(pauses):
            if index:
                run = services.run_resume(actor=ctx["operator"], run=run)
            published = ReplayRun.objects.get(pk=run.pk).published
            warm.start(0, run.pk, 0)
            warm.start(1, run.pk, 1)
            while ReplayRun.objects.get(pk=run.pk).published <= published:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.2, 0.7))  # pause at any moment of a batch's life
            run = services.run_pause(actor=ctx["operator"], run=run)
            paused = time.time()
            warm.wait(0, 30)
            warm.wait(1, 30)
            stops.append(time.time() - paused)
            stamps, _counts = _batches(run.pk, paused, float("inf"))
            _started, last, _count = _published(run.pk)
            latencies.append(max(0.0, last - paused))
            after.append(len(stamps))
        services.run_abort(actor=ctx["operator"], run=run, reason="benchmark over")
    finally:
        moves.rabbit_delete(queue)
    ordered = sorted(latencies)
    report(lines, "replay_pause_count", pauses, "pauses")
    report(lines, "replay_pause_latency_p50", statistics.median(ordered) * 1000, "ms")
    report(lines, "replay_pause_latency_p95", ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, "ms")
    report(lines, "replay_pause_latency_max", ordered[-1] * 1000, "ms")
    report(lines, "replay_pause_with_a_publish_after", sum(1 for n in after if n), "pauses")
    report(lines, "replay_pause_batches_after_pause_max", max(after), "batches")
    report(lines, "replay_pause_workers_stopped_max", max(stops) * 1000, "ms")


def main() -> list[str]:
    _load_env()
    parts = os.environ.get("BENCH_REPLAY_PARTS", "throughput,accuracy,pause").split(",")
    kinds = os.environ.get("BENCH_REPLAY_BROKERS", "rabbitmq,kafka,sqs").split(",")
    lines: list[str] = []
    with bench_database() as env:
        import django

        django.setup()
        from recovery.brokers.services import local_brokers_configure

        operator, approver = setup.users()
        ctx = {
            "env": env, "operator": operator, "approver": approver,
            "brokers": {b.kind: b for b in local_brokers_configure()},
            "count": int(os.environ.get("BENCH_REPLAY_MESSAGES", "20000")),
            "sqs_count": int(os.environ.get("BENCH_REPLAY_SQS_MESSAGES", "5000")),
            "accuracy_seconds": float(os.environ.get("BENCH_REPLAY_ACCURACY_SECONDS", "25")),
            "pauses": int(os.environ.get("BENCH_REPLAY_PAUSES", "20")),
            "workers": [int(w) for w in os.environ.get("BENCH_REPLAY_WORKERS", "1,2").split(",")],
            "accuracy_concurrent": os.environ.get("BENCH_REPLAY_ACCURACY_CONCURRENT", "0") == "1",
        }  # fmt: skip
        ctx["warm"] = setup.WarmWorkers(env, max(2, *ctx["workers"]))  # the pause test runs two
        try:
            if "throughput" in parts:
                for kind in kinds:
                    _throughput(ctx, kind, lines)
            if "accuracy" in parts:
                _accuracy(ctx, lines)
            if "pause" in parts:
                _pauses(ctx, lines)
        finally:
            ctx["warm"].close()
            import django_rq

            django_rq.get_queue("replay").empty()  # the runs' jobs: the bench's workers ran them
    return lines


if __name__ == "__main__":
    main()
