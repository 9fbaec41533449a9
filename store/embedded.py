"""The embedded backend: SQLite is the source of truth, every collection is also held in memory
(store/memory.py) and scored there -- by an exact scan, or by a faiss IVF index once a collection is large.
How writers, readers and search share it: `EmbeddedStore`'s docstring.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..models.errors import Conflict, InsufficientStorage, NotFound
from ..models.topk import top_k_indices
from .base import CollectionInfo, Hit, Record, VectorStore, check_filter, check_ids, check_name
from .memory import CollectionIndex, IvfIndex, Snapshot

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    metric TEXT NOT NULL,
    meta TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    vector BLOB NOT NULL,
    payload TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (collection, id)
);
"""
_CHUNK = 900  # ids per SQL statement (SQLite's default variable limit is 999 on old builds)
# SQLite's primary result codes of a write the disk refused (https://sqlite.org/rescode.html)
_DISK_ERRORS = {13: "the disk is full", 8: "the store is read-only", 10: "the disk failed a write (I/O error)",
                14: "a store file cannot be opened for writing"}


def storage_error(exc: sqlite3.Error, path: Path) -> Exception:
    """`InsufficientStorage` (507) for a write the disk refused; any other SQLite error as it is."""
    reason = _DISK_ERRORS.get((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF)
    if reason is None:
        return exc
    log.error("vector store write refused by the disk (%s): %s: %s", path, reason, exc)
    return InsufficientStorage(f"the write could not be stored: {reason} ({exc}); nothing was stored. Free space "
                               "in (or make writable) the data directory, then retry")


class EmbeddedStore(VectorStore):
    """The store of one process (the BentoML service that owns it).

    - Writers (upsert, delete, create, drop) are serialised by one lock; each is one SQLite transaction, and
      memory changes only after the commit succeeded, so a failed write changes nothing.
    - Readers take no store lock. A collection's in-memory state is a published snapshot (rows buffer, ids,
      `alive` mask, row count); writers append rows past the published count or flip `alive` bits, and swap in
      a new snapshot when the buffer grows. A reader therefore never waits for a writer; payloads are read from
      SQLite through per-thread read connections (WAL), which never wait for the writer either.
    - Rows are immutable once written: an update appends a new row and tombstones the old one; a delete
      tombstones (O(1)). Tombstoned rows are masked out of every search and compacted away in a background
      thread once they are a quarter of the rows (amortised O(1) per delete; searches keep using the old
      snapshot while the copy is made).

    Search: below `ann_min_rows` live rows (default 100,000), an exact scan (buffer @ query). Above it, a faiss
    `IndexIVFFlat` (inner product) is built in a background thread -- exact scan serves until it is ready --
    and then searched with `nprobe` lists and a bitmap of the live rows, so tombstones and excluded ids never
    take a slot in the top-k; new rows are added to it as they are written. Filtered searches select the
    matching rows in SQLite (`json_extract`) and scan them exactly.
    """

    kind = "embedded"
    shared = False

    def __init__(self, path: str | Path, ann_min_rows: int = 100_000, nprobe: int = 192,
                 compact_fraction: float = 0.25, background: bool = True):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ann_min_rows = ann_min_rows
        self.nprobe = nprobe
        self.compact_fraction = compact_fraction
        self.background = background  # False: ANN builds and compactions run inline (tests)
        self._wlock = threading.RLock()
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._indexes: dict[str, CollectionIndex] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False
        for row in self._db.execute("SELECT name, dim, metric, meta, created_at FROM collections"):
            info = CollectionInfo(row[0], row[1], row[2], json.loads(row[3]), row[4])
            self._indexes[info.name] = self._load(info)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _reader(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            with self._wlock:
                self._readers.append(db)
        return db

    class _Tx:
        """One write transaction. A statement or COMMIT the disk refuses (full, read-only) is rolled back and
        raised as `InsufficientStorage`; the connection is left with no transaction open, so the next write
        works again once there is space."""

        def __init__(self, db: sqlite3.Connection, path: Path):
            self.db, self.path = db, path

        def __enter__(self) -> sqlite3.Connection:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path) from exc
            return self.db

        def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                    return
                except sqlite3.Error as commit_failed:
                    exc = commit_failed
            if self.db.in_transaction:  # SQLite may or may not have rolled back a failed COMMIT itself
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise storage_error(exc, self.path) from exc

    def _load(self, info: CollectionInfo) -> CollectionIndex:
        idx = CollectionIndex(info)
        ids, blobs = [], []
        for item_id, blob in self._db.execute("SELECT id, vector FROM records WHERE collection=? ORDER BY rowid",
                                              (info.name,)):
            ids.append(item_id)
            blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(len(ids), info.dim)
        idx.load(ids, vectors)
        self._maybe_build_ann(idx)
        return idx

    # -- collections ----------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, metric: str = "ip", meta: dict | None = None) -> CollectionInfo:
        self._check_create(name, dim, metric)
        info = CollectionInfo(name, dim, metric, dict(meta or {}), time.time())
        with self._wlock:
            if name in self._indexes:
                raise Conflict(f"collection {name!r} exists already")
            with self._Tx(self._db, self.path) as db:
                db.execute("INSERT INTO collections(name, dim, metric, meta, created_at) VALUES(?, ?, ?, ?, ?)",
                           (name, dim, metric, json.dumps(info.meta), info.created_at))
            self._indexes[name] = CollectionIndex(info)
        return info

    def collection(self, name: str) -> CollectionInfo | None:
        idx = self._indexes.get(name)
        return idx.info if idx else None

    def collections(self) -> list[CollectionInfo]:
        return sorted((i.info for i in list(self._indexes.values())), key=lambda c: c.name)

    def set_meta(self, name: str, meta: dict) -> None:
        with self._wlock:
            idx = self._index(name)
            with self._Tx(self._db, self.path) as db:
                db.execute("UPDATE collections SET meta=? WHERE name=?", (json.dumps(meta), name))
            i = idx.info
            idx.info = CollectionInfo(i.name, i.dim, i.metric, dict(meta), i.created_at)

    def drop_collection(self, name: str) -> bool:
        with self._wlock:
            if name not in self._indexes:
                return False
            with self._Tx(self._db, self.path) as db:
                db.execute("DELETE FROM records WHERE collection=?", (name,))
                db.execute("DELETE FROM collections WHERE name=?", (name,))
            del self._indexes[name]
        return True

    def _index(self, name: str) -> CollectionIndex:
        idx = self._indexes.get(name)
        if idx is None:
            self._require(check_name(name))
            raise NotFound(f"unknown collection {name!r}")  # stored, but not loaded by this process
        return idx

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]) -> None:
        idx = self._index(name)
        m = self._check_upsert(idx.info, ids, vectors, payloads)
        if not len(ids):
            return
        texts = [json.dumps(p) for p in payloads]  # may fail (not JSON): before anything is written
        now = time.time()
        with self._wlock:
            if self._indexes.get(name) is not idx:
                self._require(name)
            with self._Tx(self._db, self.path) as db:
                db.executemany(
                    "INSERT INTO records(collection, id, vector, payload, updated_at) VALUES(?, ?, ?, ?, ?) "
                    "ON CONFLICT(collection, id) DO UPDATE SET vector=excluded.vector, payload=excluded.payload, "
                    "updated_at=excluded.updated_at",
                    [(name, i, v.tobytes(), t, now) for i, v, t in zip(ids, m, texts)])
            start, stop = idx.append(list(ids), m)
            ann = idx.ann
            if ann is not None:
                ann.add(idx.state.buf, start, stop)
            self._maybe_compact(idx)
            self._maybe_build_ann(idx)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        idx = self._index(name)
        ids = check_ids(ids)
        with self._wlock:
            with self._Tx(self._db, self.path) as db:
                for a in range(0, len(ids), _CHUNK):
                    part = ids[a:a + _CHUNK]
                    db.execute(f"DELETE FROM records WHERE collection=? AND id IN ({','.join('?' * len(part))})",
                               (name, *part))
            gone = idx.remove(ids)
            self._maybe_compact(idx)
        return gone

    # -- reads ----------------------------------------------------------------------------
    def count(self, name: str) -> int:
        return self._index(name).live

    def missing(self, name: str, ids: Sequence[str]) -> list[str]:
        row = self._index(name).row
        return [i for i in ids if i not in row]

    def _payloads(self, name: str, ids: Sequence[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        db = self._reader()
        for a in range(0, len(ids), _CHUNK):
            part = list(ids[a:a + _CHUNK])
            q = f"SELECT id, payload FROM records WHERE collection=? AND id IN ({','.join('?' * len(part))})"
            out.update((i, json.loads(p)) for i, p in db.execute(q, (name, *part)))
        return out

    def get(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> dict[str, Record]:
        self._index(name)  # NotFound for an unknown collection
        ids = check_ids(ids)
        payloads = self._payloads(name, ids)
        if not with_vectors:
            return {i: Record(i, payloads[i], None) for i in ids if i in payloads}
        # an id deleted since its payload was read has no vector any more: it is left out, as if read after
        vectors = self.vectors(name, [i for i in ids if i in payloads])
        return {i: Record(i, payloads[i], vectors[i]) for i in ids if i in vectors}

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """From the in-memory rows alone (scoring a candidate list never reads SQLite); the latest row of an id
        re-written meanwhile."""
        idx = self._index(name)
        st, row = idx.state, idx.row
        out = {}
        for i in check_ids(ids):
            r = row.get(i)
            if r is not None and r >= st.n:  # written since `st` was taken: read the latest state
                st = idx.state
                r = row.get(i)
            if r is not None:
                out[i] = st.buf[r].copy()
        return out

    def search(self, name: str, queries: np.ndarray, k: int, filter: dict | None = None,
               exclude: Sequence[str] = ()) -> list[list[Hit]]:
        idx = self._index(name)
        q = self._queries(idx.info, queries, k)
        flt = check_filter(filter)
        exclude = check_ids(list(exclude), "exclude")
        st, row = idx.state, idx.row
        n = st.n
        ex_rows = [r for r in (row.get(i) for i in exclude) if r is not None and r < n]
        if flt:
            rows = self._filtered_rows(name, flt, idx, n)
            results = self._exact(st, rows, q, k, ex_rows)
        elif idx.ann is not None and idx.live >= self.ann_min_rows:
            results = self._approximate(idx, st, q, k, ex_rows)
        else:
            results = self._exact(st, None, q, k, ex_rows)
        want = sorted({st.ids[r] for hits in results for r, _ in hits})
        payloads = self._payloads(name, want)
        return [[Hit(st.ids[r], s, payloads[st.ids[r]]) for r, s in hits if st.ids[r] in payloads]
                for hits in results]

    def _exact(self, st: Snapshot, rows: np.ndarray | None, q: np.ndarray, k: int, ex_rows: list[int]
               ) -> list[list[tuple[int, float]]]:
        n = st.n
        if rows is None:
            scores = st.buf[:n] @ q.T  # (n, nq)
            scores[~st.alive[:n]] = -np.inf
            if ex_rows:
                scores[ex_rows] = -np.inf
            rows = np.arange(n)
        else:
            rows = rows[st.alive[rows]]
            if ex_rows:
                rows = rows[~np.isin(rows, ex_rows)]
            scores = st.buf[rows] @ q.T
        out = []
        for j in range(q.shape[0]):
            col = scores[:, j]
            top = top_k_indices(col, k)
            out.append([(int(rows[t]), float(col[t])) for t in top if np.isfinite(col[t])])
        return out

    def _approximate(self, idx: CollectionIndex, st: Snapshot, q: np.ndarray, k: int, ex_rows: list[int]
                     ) -> list[list[tuple[int, float]]]:
        ann = idx.ann
        assert ann is not None  # callers take this path only once the IVF is built
        scores, rows = ann.search(q, k, st.alive, ex_rows, self.nprobe)
        out = []
        for j in range(q.shape[0]):
            hits = [(int(r), float(s)) for r, s in zip(rows[j], scores[j]) if r >= 0]
            # rows written after the IVF's last add (none once writes add inline): scored exactly
            if ann.covered < st.n:
                tail = np.arange(ann.covered, st.n)
                tail = tail[st.alive[tail]]
                if ex_rows:
                    tail = tail[~np.isin(tail, ex_rows)]
                hits += [(int(r), float(s)) for r, s in zip(tail, st.buf[tail] @ q[j])]
                hits = sorted(hits, key=lambda h: -h[1])[:k]
            out.append(hits)
        return out

    def _filtered_rows(self, name: str, flt: dict, idx: CollectionIndex, n: int) -> np.ndarray:
        clauses: list[str] = []
        params: list[object] = [name]
        for parts, values in flt.items():
            path = "$." + ".".join(parts)
            clauses.append(f"json_extract(payload, ?) IN ({','.join('?' * len(values))})")
            params += [path, *[int(v) if isinstance(v, bool) else v for v in values]]
        sql = f"SELECT id FROM records WHERE collection=? AND {' AND '.join(clauses)}"
        row = idx.row
        rows = [row.get(i) for (i,) in self._reader().execute(sql, params)]
        return np.asarray(sorted(r for r in rows if r is not None and r < n), dtype=np.int64)

    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]:
        self._index(name)
        return _scan_rows(self._reader(), name, batch, with_vectors)

    # -- maintenance ----------------------------------------------------------------------
    def _spawn(self, fn, *args) -> None:
        if not self.background:
            fn(*args)
            return
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"zest-store-{fn.__name__}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _maybe_compact(self, idx: CollectionIndex) -> None:
        n = idx.state.n
        if idx.dead > max(1024, self.compact_fraction * n) and not idx.compacting:
            idx.compacting = True
            self._spawn(self._compact, idx)

    def _compact(self, idx: CollectionIndex) -> None:
        try:
            with self._wlock:
                t0 = time.perf_counter()
                dead = idx.dead
                idx.compacted()
                log.info("compacted %s: %d tombstones dropped in %.2fs", idx.info.name, dead,
                         time.perf_counter() - t0)
            self._maybe_build_ann(idx)
        finally:
            idx.compacting = False

    def _maybe_build_ann(self, idx: CollectionIndex) -> None:
        if idx.ann is None and not idx.ann_building and idx.live >= self.ann_min_rows:
            idx.ann_building = True
            self._spawn(self._build_ann, idx)

    def _build_ann(self, idx: CollectionIndex) -> None:
        try:
            while not self._closed:
                t0 = time.perf_counter()
                gen, st = idx.generation, idx.state
                n0 = st.n
                live = np.flatnonzero(st.alive[:n0])
                nlist = int(min(16384, max(64, 2 * np.sqrt(len(live)))))
                ann = IvfIndex(idx.info.dim, nlist)
                rng = np.random.default_rng(0)
                sample = live if len(live) <= 40 * nlist else np.sort(rng.choice(live, 40 * nlist, replace=False))
                ann.train(st.buf[sample])
                ann.add(st.buf, 0, n0)
                with self._wlock:
                    if idx.generation != gen:
                        continue  # compacted meanwhile: row numbers changed, build again
                    cur = idx.state
                    ann.add(cur.buf, n0, cur.n)
                    idx.ann = ann
                log.info("IVF index for %s: %d rows, %d lists, built in %.1fs", idx.info.name, n0, nlist,
                         time.perf_counter() - t0)
                return
        finally:
            idx.ann_building = False

    def wait_idle(self, timeout: float = 600) -> None:
        """Wait for background index builds and compactions (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._closed = True
        with self._wlock:
            for db in self._readers:
                db.close()
            self._db.close()


def _scan_rows(db: sqlite3.Connection, name: str, batch: int, with_vectors: bool) -> Iterator[list[Record]]:
    last = -1
    while True:
        rows = db.execute("SELECT rowid, id, payload, vector FROM records WHERE collection=? AND rowid>? "
                          "ORDER BY rowid LIMIT ?", (name, last, batch)).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield [Record(i, json.loads(p), np.frombuffer(v, np.float32).copy() if with_vectors else None)
               for _, i, p, v in rows]


class EmbeddedSnapshot:
    """A read-only, consistent view of an embedded store's file, for export and backup while a server keeps
    writing it: every read runs in one SQLite read transaction (WAL: it never blocks the writer, nor waits for
    it), so it sees the store as of its first read. Nothing is loaded into memory beyond one batch."""

    kind = "embedded"

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise NotFound(f"no embedded store at {self.path}")
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=30,
                                  check_same_thread=False)
        self.db.execute("BEGIN")
        rows = self.db.execute("SELECT name, dim, metric, meta, created_at FROM collections ORDER BY name").fetchall()
        self._infos = {r[0]: CollectionInfo(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows}

    def collections(self) -> list[CollectionInfo]:
        return list(self._infos.values())

    def collection(self, name: str) -> CollectionInfo | None:
        return self._infos.get(name)

    def count(self, name: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM records WHERE collection=?", (name,)).fetchone()[0])

    def scan(self, name: str, batch: int = 1000, with_vectors: bool = False) -> Iterator[list[Record]]:
        if name not in self._infos:
            raise NotFound(f"unknown collection {name!r}")
        return _scan_rows(self.db, name, batch, with_vectors)

    def close(self) -> None:
        self.db.close()
