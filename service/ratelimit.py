"""Per-key rate limits: a token bucket of `burst` tokens refilled at `rate` per second (service/auth.py).

Each request takes one token; with none left it is refused with the seconds until one is back (the 429's
`Retry-After`). The buckets live in the public service's worker process: with N workers a key gets up to N x
its rate. A reverse proxy (nginx `limit_req`) is the alternative for limits across processes or machines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` held; starts full. `clock` is seconds, monotonic."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def retry_after(wait_s: float) -> int:
    """The Retry-After header's whole seconds for a wait: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))
