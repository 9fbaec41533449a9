"""The recommender's item catalogue: persisted in SQLite, scored from memory.

Each item is stored with its text (the source of truth) and its vector (derived from the text
by the current item model). A write is one SQLite transaction and touches memory only after the
commit succeeded, so a failed request changes nothing. On start-up, items whose vectors were made
by a different model (fingerprint mismatch) are re-embedded from their stored text, so retraining
never loses a catalogue.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    updated_at: float


class ItemCatalog:
    def __init__(self, path: str | Path, embed: Embed, fingerprint: str, batch_size: int = 256):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embed = embed
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._buf = np.zeros((0, 0), dtype=np.float32)  # rows [0, len(_ids)) are live; capacity grows 2x
        self._load()

    # -- start-up -------------------------------------------------------------------------
    def _embed_all(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.asarray(self.embed(list(texts[i:i + self.batch_size])), dtype=np.float32)
               for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def _load(self) -> None:
        stored = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        rows = self._db.execute("SELECT id, text, vector FROM items ORDER BY rowid").fetchall()
        if rows and (stored is None or stored[0] != self.fingerprint):
            vectors = self._embed_all([r[1] for r in rows])  # item model changed: re-derive vectors
            with self._transaction() as db:
                db.executemany("UPDATE items SET vector=? WHERE id=?",
                               [(v.tobytes(), r[0]) for r, v in zip(rows, vectors)])
                self._set_fingerprint(db)
        else:
            vectors = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]) if rows else None
            if stored is None:
                with self._transaction() as db:
                    self._set_fingerprint(db)
        self._ids = [r[0] for r in rows]
        self._row = {item_id: i for i, item_id in enumerate(self._ids)}
        self._buf = vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32)

    def _set_fingerprint(self, db: sqlite3.Connection) -> None:
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('fingerprint', ?)", (self.fingerprint,))

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            return False

    def _transaction(self) -> "_Tx":
        return self._Tx(self._db)

    # -- reads ----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def __contains__(self, item_id: str) -> bool:
        with self._lock:
            return item_id in self._row

    def get(self, item_id: str) -> Item | None:
        row = self._db.execute("SELECT id, text, updated_at FROM items WHERE id=?", (item_id,)).fetchone()
        return Item(*row) if row else None

    def missing(self, ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [i for i in ids if i not in self._row]

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of every item now; row j of vectors belongs to ids[j].

        No copy is made: `ids` may grow past len(vectors) while the caller works, so index
        ids only with rows of `vectors`.
        """
        with self._lock:
            return self._ids, self._buf[:len(self._ids)]

    def snapshot_rows(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray, list[int]]:
        """`snapshot()` plus the rows of `ids` (which must exist) in that same snapshot."""
        with self._lock:
            return self._ids, self._buf[:len(self._ids)], [self._row[i] for i in ids]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        with self._lock:
            return self._buf[[self._row[i] for i in ids]].copy()

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, items: Sequence[tuple[str, str]]) -> None:
        """Insert or replace (id, text) pairs, all or nothing."""
        if not items:
            return
        if len({item_id for item_id, _ in items}) != len(items):
            raise ValueError("duplicate ids in one upsert")
        vectors = self._embed_all([text for _, text in items])  # may fail: nothing written yet
        now = time.time()
        with self._lock:
            with self._transaction() as db:
                db.executemany(
                    "INSERT INTO items(id, text, vector, updated_at) VALUES(?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET text=excluded.text, vector=excluded.vector, "
                    "updated_at=excluded.updated_at",
                    [(i, t, v.tobytes(), now) for (i, t), v in zip(items, vectors)])
            fresh = [(i, v) for (i, _), v in zip(items, vectors) if i not in self._row]
            for (item_id, _), vec in zip(items, vectors):
                if item_id in self._row:
                    self._buf[self._row[item_id]] = vec  # in place: a reader sees old or new values
            self._append(fresh, vectors.shape[1])

    def _append(self, fresh: list[tuple[str, np.ndarray]], dim: int) -> None:
        n = len(self._ids)
        need = n + len(fresh)
        if self._buf.shape[0] < need or self._buf.shape[1] != dim:
            grown = np.zeros((max(need, 2 * self._buf.shape[0], 1024), dim), dtype=np.float32)
            if n:
                grown[:n] = self._buf[:n]
            self._buf = grown  # readers holding the old array keep a consistent view
        for k, (item_id, vec) in enumerate(fresh):
            self._buf[n + k] = vec
        ids = self._ids if len(self._ids) == n else list(self._ids)
        for item_id, _ in fresh:
            self._row[item_id] = len(ids)
            ids.append(item_id)
        self._ids = ids

    def delete(self, ids: Sequence[str]) -> None:
        """Delete items by id, all or nothing (the caller checks that they exist)."""
        with self._lock:
            with self._transaction() as db:
                db.executemany("DELETE FROM items WHERE id=?", [(i,) for i in ids])
            gone = set(ids)
            keep = [k for k, item_id in enumerate(self._ids) if item_id not in gone]
            self._ids = [self._ids[k] for k in keep]  # new objects: in-flight readers are unaffected
            self._row = {item_id: i for i, item_id in enumerate(self._ids)}
            self._buf = self._buf[keep].copy() if len(self._buf) else self._buf

    def close(self) -> None:
        self._db.close()
