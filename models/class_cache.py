"""Class embeddings cached per label: (model, template set, label) -> unit vector, bounded in bytes,
optionally persisted.

A label list that shares labels with earlier ones encodes only its new labels; a restart keeps what was
encoded (SQLite file per model under a directory, e.g. ``$ZEST_DATA_DIR/class-cache``). Entries are
namespaced by the model's id *and* a fingerprint of its text tower (the features of a fixed probe text),
so a checkpoint whose weights change under the same name never reads stale vectors.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROBE_TEXT = "zest class-cache probe: a photo of a thing."


def text_tower_fingerprint(probe_features: np.ndarray) -> str:
    """A short hash of the text tower's features for `[PROBE_TEXT]` (rounded, so it is stable on one device)."""
    feats = np.round(np.asarray(probe_features, dtype=np.float32), 3) + 0.0  # no -0.0
    return hashlib.sha256(feats.tobytes()).hexdigest()[:16]


class ClassEmbeddingCache:
    """Thread-safe LRU of label embeddings keyed by (template digest, label), at most ``max_bytes`` in
    memory, written through to SQLite when ``directory`` is given. ``hits``/``misses`` count labels."""

    def __init__(self, namespace: str, max_bytes: int, directory: str | Path | None = None,
                 observer: Callable[[int, int, int, int], None] | None = None):
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.namespace = namespace
        self.max_bytes = max_bytes
        self.observer = observer  # (hits, misses, entries, bytes) after each counted lookup, e.g. metrics
        self.hits = 0
        self.misses = 0
        self._bytes = 0
        self._mem: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if directory is not None:
            path = Path(directory).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", namespace)[:120]
            self.path = path / f"{safe}.sqlite3"
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE IF NOT EXISTS class_embedding (digest TEXT NOT NULL, label TEXT NOT NULL, "
                           "vector BLOB NOT NULL, PRIMARY KEY (digest, label))")
                self._db = db
            except sqlite3.Error as exc:  # a full or read-only disk: the cache serves from memory only
                db.close()
                log.warning("class cache: cannot use %s (%s); caching in memory only", self.path, exc)

    # -- size
    def __len__(self) -> int:
        with self._lock:
            return len(self._mem)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _remember(self, key: tuple[str, str], vec: np.ndarray) -> None:
        old = self._mem.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._mem[key] = vec
        self._bytes += vec.nbytes
        while self._bytes > self.max_bytes and len(self._mem) > 1:
            _, evicted = self._mem.popitem(last=False)
            self._bytes -= evicted.nbytes

    # -- lookups
    def get_many(self, digest: str, labels: Sequence[str], count: bool = True) -> dict[str, np.ndarray]:
        """The cached vectors among ``labels`` (memory first, then disk); counts hits and misses unless
        ``count`` is false (a second look at the same labels)."""
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for label in labels:
                vec = self._mem.get((digest, label))
                if vec is not None:
                    self._mem.move_to_end((digest, label))
                    found[label] = vec
            todo = [label for label in labels if label not in found]
            if todo and self._db is not None:
                for start in range(0, len(todo), 500):
                    chunk = todo[start:start + 500]
                    rows = self._db.execute(
                        f"SELECT label, vector FROM class_embedding WHERE digest = ? AND label IN "
                        f"({','.join('?' * len(chunk))})", [digest, *chunk]).fetchall()
                    for label, blob in rows:
                        vec = np.frombuffer(blob, dtype=np.float32).copy()
                        found[label] = vec
                        self._remember((digest, label), vec)
            if count:
                self.hits += len(found)
                self.misses += len(labels) - len(found)
                if self.observer is not None:
                    self.observer(len(found), len(labels) - len(found), len(self._mem), self._bytes)
        return found

    def put_many(self, digest: str, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            for label, vec in vectors.items():
                self._remember((digest, label), np.ascontiguousarray(vec, dtype=np.float32))
            if self._db is not None and vectors:
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO class_embedding (digest, label, vector) VALUES (?, ?, ?)",
                        [(digest, label, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                         for label, v in vectors.items()])
                except sqlite3.Error as exc:  # a full disk must not fail the request: memory still serves
                    log.warning("class cache: could not persist %d labels to %s: %s", len(vectors), self.path, exc)
            if self.observer is not None:
                self.observer(0, 0, len(self._mem), self._bytes)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
