"""`GreedyBatcher`: merge concurrent requests into one model call when they overlap, never wait for company.

A request that finds the model idle runs at once, alone; requests that arrive while it is busy queue up
and, when it frees, everything queued (up to ``max_batch`` items, at least one request) runs as one call.
Why not BentoML's adaptive batcher: benchmarks/README.md ("Decisions the numbers made").

A request is a sequence whose first axis counts items (an array of preprocessed images, a list of
texts); ``fn`` maps the concatenation of several requests to one row per item. If a merged call fails,
each of its requests is retried alone, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

log = logging.getLogger(__name__)

R = TypeVar("R")


Batch = Sequence[Any] | np.ndarray  # one request: a list of items, or an array whose first axis is the items


def _concat(requests: list[Batch]) -> Batch:
    if isinstance(requests[0], np.ndarray):
        return np.concatenate(requests) if len(requests) > 1 else requests[0]
    return [item for request in requests for item in request]


@dataclass
class BatchStats:
    calls: int = 0  # model calls
    requests: int = 0
    items: int = 0
    sizes: list[int] = field(default_factory=list)  # items per call, most recent last (bounded)


class GreedyBatcher(Generic[R]):
    """One worker thread runs ``fn``; ``submit``/``__call__``/``run`` may be called from any thread or loop."""

    def __init__(self, fn: Callable[[Any], R], max_batch: int, name: str = "batcher",
                 on_batch: Callable[[int, int], None] | None = None):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.name = name
        self.on_batch = on_batch  # (requests, items) after each call, e.g. for metrics
        self.stats = BatchStats()
        self._queue: deque[tuple[Batch, Future]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"zest-{name}", daemon=True)
        self._thread.start()

    # -- callers
    def submit(self, request: Batch) -> Future:
        future: Future = Future()
        if len(request) == 0:
            raise ValueError("empty request")
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._queue.append((request, future))
            self._cond.notify()
        return future

    def __call__(self, request: Batch) -> R:
        return self.submit(request).result()

    async def run(self, request: Batch) -> R:
        return await asyncio.wrap_future(self.submit(request))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests; the worker finishes what is queued, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- worker
    def _take(self) -> list[tuple[Batch, Future]]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            batch: list[tuple[Batch, Future]] = []
            items = 0
            while self._queue and (not batch or items + len(self._queue[0][0]) <= self.max_batch):
                request, future = self._queue.popleft()
                batch.append((request, future))
                items += len(request)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return  # closed and drained
            live = [(r, f) for r, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, batch: list[tuple[Batch, Future]]) -> None:
        sizes = [len(r) for r, _ in batch]
        try:
            out: Any = self.fn(_concat([r for r, _ in batch]))  # R holds one result per item: sliced below
        except BaseException as exc:  # noqa: BLE001 - delivered to the callers
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
            else:  # isolate the failing request(s): each again, alone
                for request, future in batch:
                    self._run_alone(request, future)
            return
        self._record(len(batch), sum(sizes))
        start = 0
        for (_, future), size in zip(batch, sizes):
            future.set_result(out[start:start + size])
            start += size

    def _run_alone(self, request: Batch, future: Future) -> None:
        try:
            result = self.fn(request)
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)
            return
        self._record(1, len(request))
        future.set_result(result)

    def _record(self, requests: int, items: int) -> None:
        s = self.stats
        s.calls += 1
        s.requests += requests
        s.items += items
        s.sizes.append(items)
        del s.sizes[:-1000]
        if self.on_batch is not None:
            self.on_batch(requests, items)
