"""The replay run's rate limiter: one per run, in Redis, shared by every worker of the run
(invariant 5: the rate plan holds across all workers; no 1-second window above 110% of plan).

GCRA (the generic cell rate algorithm, a token bucket kept as one number): the run's key holds
the theoretical arrival time (TAT), the moment at which the tokens granted so far have been
"paid for" at the rate. Taking n tokens moves it n / rate seconds on; a request is granted while
the TAT is at most the bucket's tolerance ahead of now. Check and update happen in one Lua
script, so workers cannot race, and "now" is Redis's clock (TIME), never a worker's.

- The rate is a parameter of each call, not of the key: a ramp step (10% -> 50% -> 100%) or a
  cut takes effect with the next call. Only the TAT is stored, so no credit is banked: idle time
  before now is forgotten and the tolerance comes from the current call's rate and burst.
- Burst: the bucket holds ``max(burst, n)`` tokens (default one batch), so a fresh or resumed run
  takes at most one batch above the rate, and a batch larger than the burst still goes through
  once the bucket is full.
- ``JITTER_TOLERANCE``: a worker told to wait wakes a little late (scheduler, round trip). With
  no tolerance each such delay would be lost for good and the achieved rate would sag below plan
  (1 ms late per 50 ms batch is -2%). Letting a grant come up to this much before its due time
  keeps the schedule; it adds at most ``rate * JITTER_TOLERANCE`` tokens to any window.

Any window of L seconds therefore holds at most ``rate * (L + JITTER_TOLERANCE) + max(burst, n)``
tokens. To stay within 110% in every second the engine's batch must be at most about a tenth of
the (ramped) rate; the engine takes a twentieth, which leaves a batch of room for the time between
a grant and its send; scripts/bench/replay_rate.py measures the limiter, scripts/bench/replay.py
the engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recovery.errors import InvalidInput, RecoveryError

JITTER_TOLERANCE = 0.025  # seconds a grant may come before its due time (see the module docstring)
KEY_PREFIX = "recovery:replay:limiter:"

# KEYS[1]: the run's key. ARGV: tokens, microseconds per token, tolerance in microseconds.
# Returns 0 when granted (and stores the new TAT), else the microseconds to wait (nothing stored).
# The TAT is kept in whole microseconds with %.0f: tostring() would round it to 14 digits.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tokens = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local early = tat - now - tolerance
if early > 0 then
  return math.ceil(early)
end
local new_tat = tat + tokens * interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
"""


class LimiterUnavailable(RecoveryError):
    """Redis did not answer the rate limiter. Nothing may be published without tokens: the
    engine pauses or retries; the limiter works again as soon as Redis answers."""


def limiter_client(url: str) -> redis.Redis:
    """A Redis client suited to the limiter: short timeouts and one immediate retry (for a pooled
    connection that died with a Redis restart), so a dead Redis surfaces as LimiterUnavailable in
    about a second instead of after redis-py's default ten backed-off retries (invariant 6)."""
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))


class RateLimiter:
    """The token bucket of one replay run, shared through Redis by all of the run's workers."""

    def __init__(self, redis_client: redis.Redis, run_id: int) -> None:
        self.redis = redis_client
        self.run_id = run_id
        self.key = f"{KEY_PREFIX}{run_id}"
        # EVALSHA; redis-py's Script loads the script again on NOSCRIPT (Redis restart, SCRIPT FLUSH).
        self._script = redis_client.register_script(_GCRA)

    def acquire(self, n: int, rate_per_second: float, *, burst: int | None = None) -> float:
        """Take ``n`` tokens at ``rate_per_second``. Returns 0.0 when granted, else the seconds to
        wait before asking again (nothing was taken). Raises LimiterUnavailable when Redis does
        not answer, InvalidInput for a non-positive n, rate or burst."""
        _check(n, rate_per_second, burst)
        interval = 1_000_000 / rate_per_second  # microseconds per token
        capacity = max(burst or n, n)
        tolerance = (capacity - n) * interval + JITTER_TOLERANCE * 1_000_000
        try:
            wait = self._script(keys=[self.key], args=[n, repr(interval), repr(tolerance)])
        except redis.RedisError as exc:
            raise LimiterUnavailable(
                f"The replay rate limiter of run {self.run_id} is unavailable: Redis did not answer "
                f"({type(exc).__name__}: {exc}). No batch is published until it does."
            ) from exc
        return int(wait) / 1_000_000

    def wait_and_acquire(
        self,
        n: int,
        rate_per_second: float,
        *,
        should_stop: Callable[[], bool],
        max_slice: float = 0.2,
        burst: int | None = None,
    ) -> bool:
        """Wait until ``n`` tokens are granted, sleeping at most ``max_slice`` seconds at a time and
        asking ``should_stop()`` before each attempt, so a pause or abort takes effect within one
        slice (invariant 6). Returns True when granted, False when stopped first (nothing taken)."""
        if not 0 < max_slice <= 1:
            raise InvalidInput(f"max_slice must be above 0 and at most 1 second (got {max_slice})")
        while not should_stop():
            wait = self.acquire(n, rate_per_second, burst=burst)
            if wait == 0.0:
                return True
            time.sleep(min(wait, max_slice))
        return False

    def reset(self) -> None:
        """Forget the run's bucket (when the run finishes): the next acquire starts full."""
        try:
            self.redis.delete(self.key)
        except redis.RedisError as exc:
            raise LimiterUnavailable(
                f"The replay rate limiter of run {self.run_id} could not be reset: {type(exc).__name__}: {exc}"
            ) from exc


def _check(n: int, rate_per_second: float, burst: int | None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"tokens per request must be a whole number of at least 1 (got {n!r})")
    if not (isinstance(rate_per_second, int | float) and math.isfinite(rate_per_second) and rate_per_second > 0):
        raise InvalidInput(f"rate must be a positive number of messages per second (got {rate_per_second!r})")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise InvalidInput(f"burst must be a whole number of at least 1 (got {burst!r})")
