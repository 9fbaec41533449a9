"""The recommender's item catalogue, kept in the vector store (zest.store): one collection
`rec_catalog_<dim>` whose records are (item id, item vector [v, b], {"text", "updated_at"}).

Each item is stored with its text (the source of truth) and its vector (derived from the text by the current
item model). A write embeds first and then stores in one store write, so a failed request changes nothing.
The collection's meta holds the item model's fingerprint; on start-up, items whose vectors were made by a
different model are re-embedded from their stored text (a model of another dimension gets a new collection,
filled from the old one, which is dropped only once the new one is complete), so retraining never loses a
catalogue. A catalogue written by zest before the vector store (`catalog.sqlite3`, table `items`) is
imported the same way on first start.

Scoring is the store's inner-product search: score = item_vector . user_vector, the content bias being
the items' last column and the users' constant 1 -- on every backend.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..store import VectorStore

log = logging.getLogger(__name__)
Embed = Callable[[list[str]], np.ndarray]
PREFIX = "rec_catalog_"


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    updated_at: float


class ItemCatalog:
    def __init__(self, store: VectorStore, embed: Embed, fingerprint: str, dim: int, batch_size: int = 256,
                 legacy_path: str | Path | None = None):
        self.store = store
        self.embed = embed
        self.fingerprint = fingerprint
        self.dim = dim
        self.batch_size = batch_size
        self.name = f"{PREFIX}{dim}"
        self._open(Path(legacy_path) if legacy_path else None)

    # -- start-up -------------------------------------------------------------------------
    def _embed_all(self, texts: Sequence[str]) -> np.ndarray:
        out = [np.asarray(self.embed(list(texts[i:i + self.batch_size])), dtype=np.float32)
               for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def _write(self, items: list[tuple[str, str, float]], vectors: np.ndarray | None = None) -> None:
        vectors = self._embed_all([t for _, t, _ in items]) if vectors is None else vectors
        self.store.upsert(self.name, [i for i, _, _ in items], vectors,
                          [{"text": t, "updated_at": u} for _, t, u in items])

    def _open(self, legacy: Path | None) -> None:
        info = self.store.collection(self.name)
        if info is None:
            info = self.store.create_collection(self.name, self.dim, "ip", {"fingerprint": None})
        meta = dict(info.meta)
        others = [c.name for c in self.store.collections() if c.name.startswith(PREFIX) and c.name != self.name]
        source = meta.get("migrating_from")
        if meta.get("fingerprint") is None and (source in others or not source):
            # new (or a migration cut short): fill from an older catalogue, if there is one
            source = source or (others[0] if others else None)
            if source:
                self.store.set_meta(self.name, {"fingerprint": None, "migrating_from": source})
                n = 0
                for batch in self.store.scan(source, self.batch_size):
                    self._write([(r.id, r.payload["text"], r.payload.get("updated_at", 0.0)) for r in batch])
                    n += len(batch)
                log.info("re-embedded %d items from %s into %s (new item model)", n, source, self.name)
            elif legacy is not None and legacy.is_file():
                self._import_legacy(legacy)
            self.store.set_meta(self.name, {"fingerprint": self.fingerprint})
            if source:
                self.store.drop_collection(source)
        elif meta.get("fingerprint") != self.fingerprint:
            n = 0
            for batch in self.store.scan(self.name, self.batch_size):
                self._write([(r.id, r.payload["text"], r.payload.get("updated_at", 0.0)) for r in batch])
                n += len(batch)
            log.info("re-embedded %d items with the new item model", n)
            self.store.set_meta(self.name, {"fingerprint": self.fingerprint})

    def _import_legacy(self, path: Path) -> None:
        db = sqlite3.connect(path)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "items" not in tables:
                return
            stored = db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone() if "meta" in tables else None
            same_model = stored is not None and stored[0] == self.fingerprint
            rows = db.execute("SELECT id, text, vector, updated_at FROM items ORDER BY rowid").fetchall()
        finally:
            db.close()
        for a in range(0, len(rows), 10_000):
            part = rows[a:a + 10_000]
            items = [(r[0], r[1], r[3]) for r in part]
            vectors = None
            if same_model and all(len(r[2]) == 4 * self.dim for r in part):
                vectors = np.frombuffer(b"".join(r[2] for r in part), np.float32).reshape(len(part), self.dim)
            self._write(items, vectors)
        log.info("imported %d items from the pre-store catalogue %s", len(rows), path)

    # -- reads ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.store.count(self.name)

    def __contains__(self, item_id: str) -> bool:
        return not self.store.missing(self.name, [item_id])

    def get(self, item_id: str) -> Item | None:
        rec = self.store.get(self.name, [item_id]).get(item_id)
        return Item(rec.id, rec.payload["text"], rec.payload.get("updated_at", 0.0)) if rec else None

    def missing(self, ids: Iterable[str]) -> list[str]:
        return self.store.missing(self.name, list(ids))

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Item rows of `ids` (which must exist), in that order."""
        found = self.store.vectors(self.name, list(ids))
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"unknown item ids {missing[:10]}")
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

    def search(self, user: np.ndarray, k: int, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The k items with the highest item . user, best first, leaving out `exclude`."""
        hits = self.store.search(self.name, np.asarray(user, np.float32)[None, :], k, exclude=exclude)[0]
        return [(h.id, h.score) for h in hits]

    # -- writes ---------------------------------------------------------------------------
    def upsert(self, items: Sequence[tuple[str, str]]) -> None:
        """Insert or replace (id, text) pairs, all or nothing."""
        if not items:
            return
        if len({item_id for item_id, _ in items}) != len(items):
            raise ValueError("duplicate ids in one upsert")
        now = time.time()
        self._write([(i, t, now) for i, t in items])  # embeds first: a failing model writes nothing

    def delete(self, ids: Sequence[str]) -> None:
        self.store.delete(self.name, list(ids))

    def close(self) -> None:
        self.store.close()
