"""Concurrent HTTP clients against a server, bounded in count."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .report import error_text
from .timing import Sample


def run_clients(n_clients: int, n_requests: int, request: Callable[[Any, int], None]) -> Sample:
    """`n_requests` calls of `request(session, i)` from `n_clients` threads, each with its own
    `requests.Session` (keep-alive). `request` raises on failure; the first few failures are kept in
    `Sample.error_messages`. Rate = successful requests per second of wall time."""
    import requests

    local = threading.local()
    latencies: list[float] = []
    messages: list[str] = []
    errors = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal errors
        if not hasattr(local, "session"):
            local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            request(local.session, i)
            failure = None
        except Exception as exc:
            failure = error_text(exc, 300)
        elapsed = time.perf_counter() - t0
        with lock:
            if failure is None:
                latencies.append(elapsed)
            else:
                errors += 1
                if len(messages) < 5:
                    messages.append(failure)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_clients) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    return Sample(wall, len(latencies), latencies, errors, messages)
