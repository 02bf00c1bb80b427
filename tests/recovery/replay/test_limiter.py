"""The run's shared rate limiter (invariant 5) against the real Redis: grant and wait, a rate
change taking effect at once, two processes sharing one run's tokens, a stop request ending the
wait within a second (invariant 6), surviving SCRIPT FLUSH and a Redis restart.

Timing-sensitive figures (every 10 s window within 2%, no 1 s window above 110%) are measured
by scripts/bench/replay_rate.py; the assertions here leave room for a noisy machine."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from recovery.errors import InvalidInput
from recovery.replay.limiter import JITTER_TOLERANCE, LimiterUnavailable, RateLimiter, limiter_client
from tests.helpers import free_port, wait_until


@pytest.fixture
def url(settings, test_redis: redis.Redis) -> str:
    """The suite's Redis database (emptied by test_redis)."""
    return settings.REDIS_URL


@pytest.fixture
def limiter(url: str) -> RateLimiter:
    client = limiter_client(url)
    yield RateLimiter(client, 1)
    client.close()


def test_a_fresh_run_gets_one_batch_at_once(limiter: RateLimiter) -> None:
    assert limiter.acquire(10, 100) == 0.0


def test_it_asks_to_wait_a_batch_worth_and_takes_nothing_meanwhile(limiter: RateLimiter) -> None:
    assert limiter.acquire(10, 100) == 0.0
    first = limiter.acquire(10, 100)
    second = limiter.acquire(10, 100)
    # 10 tokens at 100/s are due 0.1 s after the first batch (less the jitter tolerance).
    assert 0 < second <= first <= 0.1
    assert first > 0.05
    # A refused request took nothing: the wait did not grow by another batch.
    assert second > first - 0.05


def test_it_grants_again_once_the_wait_is_over(limiter: RateLimiter) -> None:
    assert limiter.acquire(5, 50) == 0.0
    wait = limiter.acquire(5, 50)
    assert wait > 0
    time.sleep(wait)
    assert limiter.acquire(5, 50) == 0.0


def test_a_lower_rate_takes_effect_with_the_next_call(limiter: RateLimiter) -> None:
    assert limiter.acquire(1, 1000) == 0.0
    assert limiter.wait_and_acquire(1, 2, should_stop=lambda: False)
    # At 1000/s the next token would be due within a millisecond; at 2/s it is half a second away.
    assert limiter.acquire(1, 2) > 0.25


def test_idle_time_at_a_high_rate_banks_no_burst_for_a_lower_one(limiter: RateLimiter) -> None:
    assert limiter.acquire(1, 1000, burst=1000) == 0.0
    time.sleep(0.2)  # a naive bucket of 1000 tokens at 1000/s would now hold 200
    assert limiter.acquire(1, 5) == 0.0
    assert limiter.acquire(1, 5) > 0.1  # one token at 5/s: 0.2 s


def test_a_higher_rate_takes_effect_with_the_next_call(limiter: RateLimiter) -> None:
    assert limiter.acquire(1, 1) == 0.0
    assert limiter.acquire(1, 1) > 0.5
    time.sleep(1.0)
    assert limiter.acquire(10, 100) == 0.0
    assert limiter.acquire(10, 100) <= 0.1


def test_burst_lets_that_many_tokens_through_then_the_rate_applies(limiter: RateLimiter) -> None:
    assert [limiter.acquire(10, 10, burst=30) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire(10, 10, burst=30) > 0.5


def test_a_batch_above_the_burst_goes_through_when_the_bucket_is_full(limiter: RateLimiter) -> None:
    assert limiter.acquire(50, 10, burst=5) == 0.0
    # ...and is paid for at the rate: 50 tokens at 10/s.
    assert 4.5 < limiter.acquire(50, 10, burst=5) <= 5.0


def test_runs_do_not_share_tokens(url: str, limiter: RateLimiter) -> None:
    other = RateLimiter(limiter_client(url), 2)
    assert limiter.acquire(10, 10) == 0.0
    assert other.acquire(10, 10) == 0.0
    assert limiter.acquire(10, 10) > 0
    assert other.acquire(10, 10) > 0


def test_reset_forgets_the_bucket(limiter: RateLimiter) -> None:
    assert limiter.acquire(10, 10) == 0.0
    limiter.reset()
    assert not limiter.redis.exists(limiter.key)
    assert limiter.acquire(10, 10) == 0.0


def test_the_key_expires_once_it_no_longer_matters(limiter: RateLimiter) -> None:
    limiter.acquire(10, 100)
    assert 0 < limiter.redis.pttl(limiter.key) <= 1100


@pytest.mark.fault
@pytest.mark.serial  # SCRIPT FLUSH empties the script cache of the Redis every test uses
def test_it_survives_script_flush(url: str, limiter: RateLimiter, test_redis: redis.Redis) -> None:
    assert limiter.acquire(10, 10) == 0.0
    test_redis.script_flush()
    assert limiter.acquire(10, 10) > 0.5  # the script was loaded again and the bucket kept
    test_redis.script_flush()
    assert RateLimiter(limiter_client(url), 1).acquire(10, 10) > 0.5


def test_should_stop_ends_the_wait_within_a_second_and_takes_nothing(limiter: RateLimiter) -> None:
    assert limiter.acquire(1, 0.1) == 0.0  # the next token is 10 s away
    calls: list[float] = []

    def should_stop() -> bool:
        calls.append(time.monotonic())
        return len(calls) == 3

    start = time.monotonic()
    assert limiter.wait_and_acquire(1, 0.1, should_stop=should_stop) is False
    assert time.monotonic() - start < 1.0  # two slices of 0.2 s
    assert len(calls) == 3
    assert limiter.acquire(1, 0.1) > 9


def test_a_stop_before_the_first_attempt_takes_nothing(limiter: RateLimiter) -> None:
    assert limiter.wait_and_acquire(10, 10, should_stop=lambda: True) is False
    assert limiter.acquire(10, 10) == 0.0


def test_it_rejects_bad_arguments(limiter: RateLimiter) -> None:
    for n, rate, burst in [(0, 10, None), (1, 0, None), (1, -5, None), (1, float("inf"), None), (1, 10, 0)]:
        with pytest.raises(InvalidInput):
            limiter.acquire(n, rate, burst=burst)
    with pytest.raises(InvalidInput):
        limiter.wait_and_acquire(1, 10, should_stop=lambda: False, max_slice=2)


def test_redis_down_raises_limiter_unavailable() -> None:
    limiter = RateLimiter(limiter_client(f"redis://127.0.0.1:{free_port()}/0"), 7)
    with pytest.raises(LimiterUnavailable, match="limiter of run 7 is unavailable: Redis did not answer"):
        limiter.acquire(1, 10)


def _redis_server(port: int, folder: Path) -> subprocess.Popen:
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", *args], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.2, retry=None)
    assert wait_until(lambda: _pings(client)), "private redis did not start"
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.fault
def test_it_works_again_after_a_redis_restart(tmp_path: Path) -> None:
    port = free_port()
    proc = _redis_server(port, tmp_path)
    try:
        limiter = RateLimiter(limiter_client(f"redis://127.0.0.1:{port}/0"), 3)
        assert limiter.acquire(10, 10) == 0.0
        proc.kill()
        proc.wait()
        with pytest.raises(LimiterUnavailable):
            limiter.acquire(10, 10)
        proc = _redis_server(port, tmp_path)  # a new server: no scripts, no buckets
        assert limiter.acquire(10, 10) == 0.0
        assert limiter.acquire(10, 10) > 0.5
    finally:
        proc.kill()
        proc.wait()


def _worker(url: str, run_id: int, n: int, rate: float, ready, go, start_at, duration: float, results) -> None:
    """One worker process of a run: take batches until the shared window ends; report the tokens
    granted inside it."""
    limiter = RateLimiter(limiter_client(url), run_id)
    limiter.acquire(1, 1e9)  # connect and load the script before the clock starts
    ready.put(True)
    go.wait(30)
    time.sleep(max(0.0, start_at.value - time.time()))
    stop_at = start_at.value + duration
    taken = 0
    while limiter.wait_and_acquire(n, rate, should_stop=lambda: time.time() >= stop_at):
        if time.time() >= stop_at:
            break
        taken += n
    results.put(taken)


@pytest.mark.timing  # a speed bound: measured alone, in the serial phase
def test_two_processes_share_one_runs_rate(url: str) -> None:
    rate, n, duration, run_id = 50, 5, 3.0, 4
    RateLimiter(limiter_client(url), run_id).reset()
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    args = (url, run_id, n, rate, ready, go, start_at, duration, results)
    workers = [ctx.Process(target=_worker, args=args) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        RateLimiter(limiter_client(url), run_id).reset()  # the warm-up calls took a token
        start_at.value = time.time() + 0.2
        go.set()
        counts = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    plan = rate * duration
    # GCRA bound for any window: rate * (duration + tolerance) + one batch (the fresh bucket).
    assert sum(counts) <= plan + n + rate * JITTER_TOLERANCE
    assert sum(counts) > 0.8 * plan
    assert all(count > 0 for count in counts), f"one worker took every batch: {counts}"
