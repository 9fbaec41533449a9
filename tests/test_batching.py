"""GreedyBatcher, with a deterministic fake encoder: counts and order, never wall-clock times."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from zest.service.batching import GreedyBatcher

WAIT = 30  # seconds: only a guard against a hang, never a measurement


class FakeEncoder:
    """Records every call; the first call can be held until the test releases it (a busy model)."""

    def __init__(self, hold_first: bool = False):
        self.calls: list[list[float]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, x):
        self.calls.append([float(v) for v in np.asarray(x)[:, 0]])
        self.started.set()
        assert self.release.wait(WAIT)
        if np.any(np.asarray(x) < 0):
            raise ValueError("negative input")
        return np.asarray(x) * 10


def rows(*values):
    return np.array([[v] for v in values], dtype=float)


def test_an_idle_batcher_runs_a_lone_request_at_once_and_alone():
    enc = FakeEncoder()
    batcher = GreedyBatcher(enc, max_batch=64)
    out = batcher.submit(rows(1, 2)).result(WAIT)
    assert out.tolist() == [[10], [20]]
    assert enc.calls == [[1, 2]]


def test_requests_queued_while_busy_run_as_one_batch_then_a_lone_one_does_not_wait():
    enc = FakeEncoder(hold_first=True)
    batcher = GreedyBatcher(enc, max_batch=64)
    first = batcher.submit(rows(0))
    assert enc.started.wait(WAIT)  # the model is busy with the first request
    burst = [batcher.submit(rows(i)) for i in range(1, 10)]
    assert batcher.queued == 9
    enc.release.set()
    assert [f.result(WAIT).tolist() for f in [first, *burst]] == [[[10 * i]] for i in range(10)]
    assert enc.calls == [[0], list(range(1, 10))]  # the burst ran as one call

    lone = batcher.submit(rows(42)).result(WAIT)  # after the burst: dispatched at once, alone
    assert lone.tolist() == [[420]]
    assert enc.calls[-1] == [42] and len(enc.calls) == 3
    assert batcher.stats.sizes == [1, 9, 1]


def test_max_batch_is_respected_and_order_kept():
    enc = FakeEncoder(hold_first=True)
    batcher = GreedyBatcher(enc, max_batch=4)
    first = batcher.submit(rows(0))
    assert enc.started.wait(WAIT)
    futures = [batcher.submit(rows(i, i)) for i in range(1, 6)]  # 2 items each
    enc.release.set()
    [f.result(WAIT) for f in [first, *futures]]
    assert enc.calls == [[0], [1, 1, 2, 2], [3, 3, 4, 4], [5, 5]]


def test_a_request_larger_than_max_batch_still_runs():
    enc = FakeEncoder()
    assert GreedyBatcher(enc, max_batch=2).submit(rows(1, 2, 3)).result(WAIT).shape == (3, 1)


def test_a_failing_request_does_not_fail_its_neighbours():
    enc = FakeEncoder(hold_first=True)
    batcher = GreedyBatcher(enc, max_batch=64)
    first = batcher.submit(rows(0))
    assert enc.started.wait(WAIT)
    good, bad, good2 = batcher.submit(rows(1)), batcher.submit(rows(-1)), batcher.submit(rows(2))
    enc.release.set()
    first.result(WAIT)
    assert good.result(WAIT).tolist() == [[10]] and good2.result(WAIT).tolist() == [[20]]
    with pytest.raises(ValueError, match="negative"):
        bad.result(WAIT)
    assert enc.calls[1] == [1, -1, 2]  # merged first, then each alone
    assert enc.calls[2:] == [[1], [-1], [2]]


def test_lists_of_texts_and_asyncio_callers():
    seen = []

    def encode(texts):
        seen.append(list(texts))
        return np.array([[len(t)] for t in texts])

    batcher = GreedyBatcher(encode, max_batch=8)

    async def main():
        return await asyncio.gather(batcher.run(["a", "bb"]), batcher.run(["ccc"]))

    a, b = asyncio.run(main())
    assert a.tolist() == [[1], [2]] and b.tolist() == [[3]]
    assert sorted(t for call in seen for t in call) == ["a", "bb", "ccc"]


def test_close_drains_then_refuses():
    enc = FakeEncoder()
    batcher = GreedyBatcher(enc, max_batch=8)
    f = batcher.submit(rows(1))
    batcher.close(timeout=WAIT)
    assert f.result(WAIT).tolist() == [[10]]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(rows(2))
