"""Benchmark: rate accuracy of the replay run's shared limiter (issue 6, invariant 5). Target:
every 10 s window within +-2% of plan, no 1 s window above 110% of plan.

For 10, 100 and 1000 msg/s (batches of 1, 10 and 50 messages), two worker processes share one
run's limiter; each loops `wait_and_acquire(batch)` and stamps the batch's messages as published
at the moment it is granted (no broker here: the limiter is what is measured; the engine's
end-to-end figures come with its own benchmark). The three rates run at the same time on their
own run ids, so the whole benchmark takes about BENCH_REPLAY_RATE_SECONDS (default 35: three
full 10 s windows per rate).

Windows slide: every window of 10 s (or 1 s) that fits in the measured span, at every start
where its count can change, is checked, not only back-to-back ones.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from bisect import bisect_left
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from recovery.replay.limiter import RateLimiter, limiter_client  # noqa: E402
from scripts.bench.common import ROOT, report  # noqa: E402

CASES = [(10, 1), (100, 10), (1000, 50)]  # (msg/s, batch size)
WORKERS = 2


def _load_env() -> None:
    """Standalone runs read the local services' URLs as `make bench` does (it sources .local/env)."""
    path = ROOT / ".local" / "env"
    if "REDIS_URL" in os.environ or not path.exists():
        return
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip())


def _worker(url: str, run_id: int, rate: int, batch: int, ready, go, start_at, seconds: float, results) -> None:
    limiter = RateLimiter(limiter_client(url), run_id)
    limiter.acquire(1, 1e9)  # connect and load the script before the clock starts
    ready.put(run_id)
    go.wait(60)
    time.sleep(max(0.0, start_at.value - time.time()))
    stop_at = start_at.value + seconds
    stamps: list[float] = []
    while limiter.wait_and_acquire(batch, rate, should_stop=lambda: time.time() >= stop_at):
        now = time.time()
        if now >= stop_at:
            break
        stamps.append(now)
    results.put((rate, stamps))


def _windows(stamps: list[float], batch: int, start: float, end: float, length: float) -> list[int]:
    """Messages in every window [t, t + length) within [start, end], at each t where the count
    can change: a stamp leaving (t = stamp, and just after) or entering (t = stamp - length)."""
    prefix = [0, *accumulate(batch for _ in stamps)]

    def count(t: float) -> int:
        return prefix[bisect_left(stamps, t + length)] - prefix[bisect_left(stamps, t)]

    starts = {start, end - length}
    for stamp in stamps:
        for edge in (stamp, stamp - length):
            starts.update(t for t in (edge, edge + 1e-6) if start <= t <= end - length)
    return [count(t) for t in starts]


def main(seconds: float) -> list[str]:
    _load_env()
    url = os.environ["REDIS_URL"]
    # Negative run ids: never a real run's key.
    run_ids = {rate: -(os.getpid() * 10 + i) for i, (rate, _batch) in enumerate(CASES)}
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    workers = [
        ctx.Process(target=_worker, args=(url, run_ids[rate], rate, batch, ready, go, start_at, seconds, results))
        for rate, batch in CASES
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=120)
        for run_id in run_ids.values():  # the warm-up calls took a token
            RateLimiter(limiter_client(url), run_id).reset()
        start_at.value = time.time() + 0.5
        go.set()
        stamps: dict[int, list[float]] = {rate: [] for rate, _batch in CASES}
        for _ in workers:
            rate, worker_stamps = results.get(timeout=seconds + 120)
            stamps[rate].extend(worker_stamps)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        for run_id in run_ids.values():
            RateLimiter(limiter_client(url), run_id).reset()

    lines: list[str] = []
    start, end = start_at.value, start_at.value + seconds
    report(lines, "replay_rate_seconds_per_rate", seconds, "s")
    for rate, batch in CASES:
        times = sorted(stamps[rate])
        ten = _windows(times, batch, start, end, 10.0)
        one = _windows(times, batch, start, end, 1.0)
        plan_ten = rate * 10
        deviations = [(c - plan_ten) / plan_ten * 100 for c in ten]
        mean = len(times) * batch / seconds
        report(lines, f"replay_rate_{rate}_batch", batch, "messages")
        report(lines, f"replay_rate_{rate}_mean_rate", mean, "msg/s")
        report(lines, f"replay_rate_{rate}_mean_rate_deviation", (mean - rate) / rate * 100, "%")
        report(lines, f"replay_rate_{rate}_worst_10s_window_deviation", max(abs(d) for d in deviations), "%")
        report(lines, f"replay_rate_{rate}_lowest_10s_window_deviation", min(deviations), "%")
        report(lines, f"replay_rate_{rate}_highest_10s_window_deviation", max(deviations), "%")
        report(lines, f"replay_rate_{rate}_max_1s_window", max(one) / rate * 100, "%_of_plan")
    return lines


if __name__ == "__main__":
    main(float(os.environ.get("BENCH_REPLAY_RATE_SECONDS", "35")))
