"""Request-level logic of the recommender endpoints, independent of HTTP and BentoML.

A `Recommender` joins a trained ZESRec model (text -> item vector, history -> user vector) with the
persistent `ItemCatalog` (kept in the vector store, zest.store). Items are embedded when written, so a new item is recommendable at once,
with no retraining; score = item_vector · user_vector (the item's content bias is the last column).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..models.errors import InvalidInput, NotFound
from ..models.limits import check_at_most, check_chars, check_count
from .catalog import ItemCatalog
from .schemas import ItemIn
from .settings import Settings


def model_fingerprint(model_dir: str | Path) -> str:
    """Identifies the item model whose vectors the catalogue holds (hash of its weights)."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class Recommender:
    def __init__(self, model, catalog: ItemCatalog, model_id: str, settings: Settings | None = None):
        self.model = model  # models.rec.zesrec.ZesRec
        self.catalog = catalog
        self.model_id = model_id
        self.limits = settings or Settings()  # max_rec_items, max_item_text_chars, max_history, max_k, max_candidates

    # -- items ----------------------------------------------------------------------------
    def upsert(self, items: Sequence[ItemIn]) -> dict:
        """`items` as the schema validated them (ids, non-blank texts); the limits and repeats are checked here."""
        lim = self.limits
        check_count(items, "items", lim.max_rec_items, per_request=True)
        for n, item in enumerate(items):
            check_chars(item.text, f"items[{n}].text", lim.max_item_text_chars)
        pairs = [(item.id, item.text) for item in items]
        if len({i for i, _ in pairs}) != len(pairs):
            raise InvalidInput("the same item id appears twice in one request")
        new = self.catalog.missing([i for i, _ in pairs])
        self.catalog.upsert(pairs)
        return {"created": len(new), "updated": len(pairs) - len(new), "total": len(self.catalog)}

    def get(self, item_id: str) -> dict:
        item = self.catalog.get(item_id)
        if item is None:
            raise NotFound(f"unknown item id {item_id!r}")
        return {"id": item.id, "text": item.text, "updated_at": item.updated_at}

    def delete(self, item_id: str) -> dict:
        if item_id not in self.catalog:
            raise NotFound(f"unknown item id {item_id!r}")
        self.catalog.delete([item_id])
        return {"deleted": item_id, "total": len(self.catalog)}

    # -- ranking --------------------------------------------------------------------------
    def _unknown(self, ids: Sequence[str], what: str) -> None:
        missing = self.catalog.missing(ids)
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise NotFound(f"unknown item id(s) in {what}: {shown}{more}")

    def recommend(self, history: Sequence[str] = (), history_texts: Sequence[str] = (), k: int = 10,
                  exclude_history: bool = True, candidates: Sequence[str] | None = None) -> dict:
        """The arguments as `RecommendRequest` validated them (ids, non-blank texts, k >= 1); the limits, an empty
        history and repeated candidates are checked here."""
        lim = self.limits
        history, texts = list(history), list(history_texts)
        check_count(history, "ids in history", lim.max_history)
        check_count(texts, "texts in history_texts", lim.max_history)
        for i, t in enumerate(texts):
            check_chars(t, f"history_texts[{i}]", lim.max_item_text_chars)
        if not history and not texts:
            raise InvalidInput("the history is empty: give item ids in 'history' and/or descriptions in "
                               "'history_texts'")
        check_at_most(k, lim.max_k, f"k={k}")
        self._unknown(history, "history")
        if candidates is not None:
            candidates = list(candidates)
            check_count(candidates, "ids in candidates", lim.max_candidates)
            if len(set(candidates)) != len(candidates):
                raise InvalidInput("candidates repeats an item id")
            self._unknown(candidates, "candidates")

        rows = [self.catalog.vectors(history)] if history else []
        if texts:  # free-text descriptions count as the most recent part of the history
            rows.append(self.model.embed_items(texts))
        user = self.model.user_vector(np.concatenate(rows))

        if candidates is not None:
            pool_ids, pool = candidates, self.catalog.vectors(candidates)
            seen = set(history)
            exclude = [j for j, c in enumerate(candidates) if c in seen] if exclude_history else []
            if len(pool) == 0:
                return {"model": self.model_id, "items": []}
            top, scores = self.model.recommend(user, pool, k=k, exclude=exclude or None)
            ranked = [(pool_ids[j], float(s)) for j, s in zip(top, scores)]
        else:  # the whole catalogue: the vector store's inner-product search
            ranked = self.catalog.search(user, k, exclude=list(dict.fromkeys(history)) if exclude_history else ())
        return {"model": self.model_id, "items": [{"id": i, "score": s} for i, s in ranked]}


NO_MODEL = "no recommender model is configured: train one with `zest rec train` and set ZEST_REC_MODEL"


def shipped_model_dir() -> Path:
    """The ZESRec model committed with zest (trained on MovieLens ml-latest-small). The package is found, not
    imported: the API worker asks this (has_model) and runs no part of the model."""
    spec = importlib.util.find_spec("..models.rec", __package__)
    assert spec is not None and spec.origin is not None, "zest.models.rec is part of zest"
    return Path(spec.origin).parent / "checkpoint"


def has_model(settings: Settings) -> bool:
    """Whether there is a recommender model to serve: ZEST_REC_MODEL's, or the one shipped with zest (a source
    tree may lack its weights). Without one the recommender service loads nothing and the public API answers
    /items and /recommend with 503 (NO_MODEL) itself, while the CLIP endpoints serve."""
    return bool(settings.rec_model) or (shipped_model_dir() / "model.safetensors").is_file()


def build_recommender(model_dir: str | Path, model_id: str, settings: Settings,
                      embed: Callable[[list[str]], np.ndarray] | None = None) -> Recommender:
    """Load the model, open (and if needed re-embed) the persistent catalogue in ZEST_VECTOR_STORE. `embed`:
    what computes the MiniLM vectors of texts not in the text cache; default, MiniLM in this process (the
    served recommender passes the encoder service's, service/item_texts.py)."""
    from ..models.rec.text import TextEncoder
    from ..models.rec.zesrec import load

    model = load(model_dir, encoder=TextEncoder(max_cached=settings.text_cache_size, embed=embed))
    store = open_store_for(settings, "catalog")
    catalog = ItemCatalog(store, model.embed_items, fingerprint=model_fingerprint(model_dir), dim=model.dim,
                          legacy_path=Path(settings.data_dir).expanduser() / "catalog.sqlite3")
    return Recommender(model, catalog, model_id, settings)


def open_store_for(settings: Settings, role: str):
    """The vector store ZEST_VECTOR_STORE names, for `role` ("catalog" or "collections")."""
    from ..store import open_store

    return open_store(settings.vector_store, role, data_dir=settings.data_dir, token=settings.milvus_token,
                      ann_min_rows=settings.ann_min_rows, nprobe=settings.ann_nprobe)
