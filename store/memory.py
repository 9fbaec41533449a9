"""In-memory side of the embedded store: one collection's rows as a published snapshot (readers never wait
for writers), tombstones, compaction, and the faiss IVF index used once a collection is large. SQLite, the
source of truth, is store/embedded.py's job."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from .base import CollectionInfo


class Snapshot:
    """A published view of one collection: rows [0, n) of buf, their ids and liveness."""

    __slots__ = ("alive", "buf", "ids", "n")

    def __init__(self, buf: np.ndarray, ids: list, alive: np.ndarray, n: int):
        self.buf, self.ids, self.alive, self.n = buf, ids, alive, n


class IvfIndex:
    """faiss IVF-Flat over rows [0, covered) of a collection, keyed by row number."""

    def __init__(self, dim: int, nlist: int):
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        self.lock = threading.Lock()  # faiss IVF is not safe for add concurrent with search
        self.covered = 0

    def train(self, sample: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, buf: np.ndarray, start: int, stop: int, chunk: int = 50_000) -> None:
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            with self.lock:
                self.index.add_with_ids(np.ascontiguousarray(buf[a:b]), np.arange(a, b, dtype=np.int64))
                self.covered = b

    def search(self, q: np.ndarray, k: int, alive: np.ndarray, exclude_rows: Sequence[int], nprobe: int
               ) -> tuple[np.ndarray, np.ndarray]:
        faiss = self.faiss
        with self.lock:
            covered = self.covered
            mask = alive[:covered].copy()
            if len(exclude_rows):
                ex = np.asarray([r for r in exclude_rows if r < covered], dtype=np.int64)
                mask[ex] = False
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(covered, faiss.swig_ptr(bits))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            scores, rows = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k, params=params)
        return scores, rows


class CollectionIndex:
    """One collection in memory."""

    def __init__(self, info: CollectionInfo):
        self.info = info
        self.state = Snapshot(np.zeros((0, info.dim), np.float32), [], np.zeros(0, bool), 0)
        self.row: dict[str, int] = {}
        self.dead = 0
        self.generation = 0  # bumped by compaction (row numbers change)
        self.ann: IvfIndex | None = None
        self.ann_building = False
        self.compacting = False  # store/embedded.py: a compaction is running in the background

    @property
    def live(self) -> int:
        return len(self.row)

    def load(self, ids: list[str], vectors: np.ndarray) -> None:
        n = len(ids)
        cap = max(1024, n + n // 4)
        buf = np.zeros((cap, self.info.dim), np.float32)
        buf[:n] = vectors
        alive = np.zeros(cap, bool)
        alive[:n] = True
        self.state = Snapshot(buf, list(ids), alive, n)
        self.row = {item_id: i for i, item_id in enumerate(ids)}

    def append(self, ids: Sequence[str], vectors: np.ndarray) -> tuple[int, int]:
        """Tombstone the old rows of `ids`, append new ones; (first, stop) row numbers appended."""
        st = self.state
        for item_id in ids:
            old = self.row.get(item_id)
            if old is not None:
                st.alive[old] = False
                self.dead += 1
        n, need = st.n, st.n + len(ids)
        if need > len(st.buf):
            cap = max(need, 2 * len(st.buf), 1024)
            buf = np.zeros((cap, self.info.dim), np.float32)
            buf[:n] = st.buf[:n]
            alive = np.zeros(cap, bool)
            alive[:n] = st.alive[:n]
            st = Snapshot(buf, st.ids, alive, n)
        st.buf[n:need] = vectors
        st.ids.extend(ids)  # past the published n: invisible to readers until the new state below
        st.alive[n:need] = True
        for k, item_id in enumerate(ids):
            self.row[item_id] = n + k
        self.state = Snapshot(st.buf, st.ids, st.alive, need)  # publish
        return n, need

    def remove(self, ids: Sequence[str]) -> int:
        st, gone = self.state, 0
        for item_id in ids:
            r = self.row.pop(item_id, None)
            if r is not None:
                st.alive[r] = False
                self.dead += 1
                gone += 1
        return gone

    def compacted(self) -> None:
        st = self.state
        keep = np.flatnonzero(st.alive[:st.n])
        ids = [st.ids[j] for j in keep]
        self.load(ids, st.buf[keep])
        self.dead = 0
        self.generation += 1
        self.ann = None
