"""Timing samples, percentiles, and interleaved rounds of several contenders."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latencies given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "mean": statistics.fmean(ms), "max": max(ms)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Sample:
    """One timed run of a contender: `count` units (images, requests, items) in `seconds`."""

    seconds: float
    count: int
    latencies: list[float] = field(default_factory=list)  # per request/batch, seconds
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat_for(fn: Callable[[], Sample], min_seconds: float) -> Callable[[], Sample]:
    """`fn` wrapped so that one measurement repeats it until at least `min_seconds` were spent: fast
    contenders (a small model) are not timed over a few milliseconds of work."""

    def run() -> Sample:
        total = Sample(0.0, 0)
        while total.seconds < min_seconds or total.count + total.errors == 0:
            s = fn()
            total = Sample(total.seconds + s.seconds, total.count + s.count, total.latencies + s.latencies,
                           total.errors + s.errors, (total.error_messages + s.error_messages)[:5])
        return total

    return run


def interleave(contenders: dict[str, Callable[[], Sample]], repeats: int, warmup: int = 1,
               log: Callable[[str], None] = print) -> dict[str, list[Sample]]:
    """Round-robin: each round runs every contender once; the order rotates each round so no contender
    always runs first (or right after the expensive one). Warm-up rounds are not recorded."""
    names = list(contenders)
    for w in range(warmup):
        for name in names:
            log(f"  warm-up {w + 1}/{warmup}: {name}")
            contenders[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            s = contenders[name]()
            samples[name].append(s)
            log(f"  round {r + 1}/{repeats}: {name:<28} {s.rate:9.2f}/s" + (f"  ({s.errors} errors)" if s.errors else ""))
    return samples


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Median rate over repeats; latency percentiles pooled over every request of every repeat."""
    lat = [x for s in samples for x in s.latencies]
    return {"rate_median": median([s.rate for s in samples]), "rates": [s.rate for s in samples],
            "count_per_repeat": samples[0].count if samples else 0,
            "latency_ms": latency_ms(lat), "errors": sum(s.errors for s in samples),
            "error_messages": [m for s in samples for m in s.error_messages][:5]}
