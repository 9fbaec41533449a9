"""`ZeroShotClassifier`: class names + a template set -> probabilities for images."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio.to_thread
import numpy as np

from ..prompts import TemplateSet
from .class_cache import PROBE_TEXT, ClassEmbeddingCache, text_tower_fingerprint
from .errors import InvalidInput
from .limits import MAX_THRESHOLD, MIN_THRESHOLD, check_chars, check_count
from .zero_shot import Scoring, ensemble, prompt_texts, scoring_of, top_k, zero_shot_probs

_SPACES = re.compile(r"\s+")


def clean_labels(labels: object, max_labels: int = 1000, max_label_chars: int = 200) -> list[str]:
    """Whitespace-normalised labels, or `InvalidInput` for an empty, blank, duplicate or oversized list."""
    if not isinstance(labels, (list, tuple)):
        raise InvalidInput("labels must be a list of strings")
    if not labels:
        raise InvalidInput("labels is empty: give at least one class name")
    check_count(labels, "labels", max_labels)
    cleaned: list[str] = []
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise InvalidInput(f"label {i} is not a string")
        label = _SPACES.sub(" ", label).strip()
        if not label:
            raise InvalidInput(f"label {i} is blank")
        check_chars(label, f"label {i}", max_label_chars, error=InvalidInput)
        if label in seen:
            raise InvalidInput(f"label {label!r} appears more than once")
        seen.add(label)
        cleaned.append(label)
    return cleaned


EncodeTexts = Callable[[list[str]], Awaitable[np.ndarray]]


def local_texts(encode_texts: Callable[[list[str]], np.ndarray]) -> EncodeTexts:
    """A local encoder's `encode_texts` as the awaitable the classifier takes (it runs in the caller's thread:
    for the CLI and tests, not for a server's event loop)."""
    async def encode(texts: list[str]) -> np.ndarray:
        return encode_texts(texts)
    return encode


class ZeroShotClassifier:
    """Zero-shot classification with class embeddings cached per label.

    `encode_texts` is awaited: it maps texts to unit-norm features (the encoder service, or `local_texts` of a
    `ClipEncoder`). Each label's embedding (the mean of its prompts over a template set) is cached under (model,
    template set, label) in a `ClassEmbeddingCache`: a repeated request never touches the text tower, and a
    label list that shares labels with earlier ones encodes only the new labels. A label being encoded for one
    request is awaited by the others that need it, not encoded again. Give `cache_dir` to keep the cache across
    restarts. Blocking steps (SQLite, the product) run in a worker thread; the in-flight table lives on the loop.
    """

    def __init__(self, encode_texts: EncodeTexts, model_id: str, logit_scale: float,
                 cache_bytes: int = 256 * 2**20, cache_dir: str | Path | None = None,
                 cache_observer: Callable[[int, int, int, int], None] | None = None,
                 logit_bias: float | None = None):
        self.encode_texts = encode_texts
        self.model_id = model_id
        self.logit_scale = float(logit_scale)
        self.logit_bias = None if logit_bias is None else float(logit_bias)  # set: sigmoid scoring (SigLIP)
        self._cache_bytes = cache_bytes
        self._cache_dir = cache_dir
        self._cache_observer = cache_observer
        self._cache: ClassEmbeddingCache | None = None
        self._opening: asyncio.Future[ClassEmbeddingCache] | None = None
        self._inflight: dict[tuple[str, str], asyncio.Future[np.ndarray]] = {}  # (digest, label) being encoded

    @classmethod
    def from_encoder(cls, encoder, cache_bytes: int = 256 * 2**20,
                     cache_dir: str | Path | None = None) -> ZeroShotClassifier:
        return cls(local_texts(encoder.encode_texts), encoder.model_id, encoder.logit_scale,
                   cache_bytes=cache_bytes, cache_dir=cache_dir, logit_bias=getattr(encoder, "logit_bias", None))

    @property
    def scoring(self) -> Scoring:
        return scoring_of(self.logit_bias)

    @property
    def cache(self) -> ClassEmbeddingCache | None:
        """The class-embedding cache, once open."""
        return self._cache

    async def open_cache(self) -> ClassEmbeddingCache:
        """Opened on first use, once however many requests ask at the same time: its namespace needs one probe
        through the text tower."""
        if self._cache is not None:
            return self._cache
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    async def _open(self) -> ClassEmbeddingCache:
        namespace = f"{self.model_id}@{text_tower_fingerprint(await self.encode_texts([PROBE_TEXT]))}"
        self._cache = await anyio.to_thread.run_sync(functools.partial(
            ClassEmbeddingCache, namespace, self._cache_bytes, self._cache_dir, observer=self._cache_observer))
        return self._cache

    def _opened(self, fut: asyncio.Future[ClassEmbeddingCache]) -> None:
        self._opening = None  # failed: the next request tries again
        if not fut.cancelled():
            fut.exception()  # retrieved: the requests awaiting it raise it

    def cached(self, labels: Sequence[str], templates: TemplateSet) -> dict[str, np.ndarray] | None:
        """The cached embeddings among `labels` (blocking: call it in a worker thread); None while the cache
        is not open yet (`open_cache`)."""
        return None if self._cache is None else self._cache.get_many(templates.digest, list(labels))

    async def class_embeddings(self, labels: Sequence[str], templates: TemplateSet,
                               found: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n_labels, dim) unit-norm class embeddings; only labels never seen with these templates are encoded.
        `found`: what `cached` returned for these labels already (None: look them up here)."""
        labels = list(labels)
        cache = await self.open_cache()
        if found is None:
            found = await anyio.to_thread.run_sync(cache.get_many, templates.digest, labels)
        missing = [label for label in labels if label not in found]
        if missing:
            found = {**found, **await self._encode(cache, missing, templates)}
        return np.stack([found[label] for label in labels]).astype(np.float32)

    async def _encode(self, cache: ClassEmbeddingCache, labels: list[str],
                      templates: TemplateSet) -> dict[str, np.ndarray]:
        """Embeddings of labels missing from the cache: those another request is encoding are awaited, the
        rest encoded here (and awaited by others meanwhile). If the request encoding some is cancelled, they
        are encoded here."""
        out: dict[str, np.ndarray] = {}
        while len(out) < len(labels):
            todo = [label for label in labels if label not in out]
            waiting = {label: self._inflight[(templates.digest, label)] for label in todo
                       if (templates.digest, label) in self._inflight}
            mine = [label for label in todo if label not in waiting]
            loop = asyncio.get_running_loop()
            futures = {label: loop.create_future() for label in mine}
            self._inflight.update({(templates.digest, label): f for label, f in futures.items()})
            own, others = await asyncio.gather(self._encode_own(cache, futures, templates),
                                               self._await_others(waiting))
            out.update(own)
            out.update(others)
        return out

    async def _encode_own(self, cache: ClassEmbeddingCache, futures: dict[str, asyncio.Future[np.ndarray]],
                          templates: TemplateSet) -> dict[str, np.ndarray]:
        if not futures:
            return {}
        labels = list(futures)
        try:
            feats = await self.encode_texts(prompt_texts(labels, templates.templates))
            new = dict(zip(labels, ensemble(feats, len(labels), len(templates.templates))))
            for label, fut in futures.items():
                fut.set_result(new[label])
            await anyio.to_thread.run_sync(cache.put_many, templates.digest, new)
            return new
        except BaseException as exc:
            for fut in futures.values():
                if fut.done():
                    continue
                if isinstance(exc, Exception):
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: no "never retrieved" log when nobody waits on it
                else:
                    fut.cancel()  # cancelled: whoever waits encodes these labels itself
            raise
        finally:
            for label in labels:  # only once stored: a later lookup finds them in the cache
                self._inflight.pop((templates.digest, label), None)

    @staticmethod
    async def _await_others(waiting: dict[str, asyncio.Future[np.ndarray]]) -> dict[str, np.ndarray]:
        out = {}
        for label, fut in waiting.items():
            try:
                out[label] = await asyncio.shield(fut)  # our own cancellation must not cancel theirs
            except asyncio.CancelledError:
                if not fut.cancelled():
                    raise  # this request was cancelled
        return out

    def rank(self, image_features: np.ndarray, class_emb: np.ndarray, labels: Sequence[str], k: int,
             threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, most probable first; with `threshold`, only the labels whose
        probability is at least it (blocking: the product, for a worker thread)."""
        probs = zero_shot_probs(image_features, class_emb, self.logit_scale, self.logit_bias)
        predictions = top_k(probs, list(labels), k)
        if threshold is None:
            return predictions
        return [[(label, p) for label, p in row if p >= threshold] for row in predictions]

    async def probabilities(self, image_features: np.ndarray, labels: Sequence[str],
                            templates: TemplateSet) -> np.ndarray:
        """The model's own probabilities (its `scoring`), (n_images, n_labels) in label order."""
        return zero_shot_probs(image_features, await self.class_embeddings(labels, templates), self.logit_scale,
                               self.logit_bias)

    async def predict(self, image_features: np.ndarray, labels: Sequence[str], templates: TemplateSet,
                      k: int = 5, threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """`rank` over these labels' class embeddings (sigmoid scoring only for `threshold`)."""
        if k < 1:
            raise InvalidInput("top_k must be at least 1")
        threshold = check_threshold(threshold, self.scoring)
        class_emb = await self.class_embeddings(labels, templates)
        return await anyio.to_thread.run_sync(self.rank, image_features, class_emb, list(labels), k, threshold)


def check_threshold(threshold: object, scoring: Scoring) -> float | None:
    """`threshold` as a float (None stays None), or InvalidInput unless it is a probability in [0, 1] and the
    model's scoring is sigmoid."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
            not MIN_THRESHOLD <= threshold <= MAX_THRESHOLD:
        raise InvalidInput(f"threshold must be a number between {MIN_THRESHOLD} and {MAX_THRESHOLD}")
    if scoring != "sigmoid":
        raise InvalidInput("threshold needs a model with per-label (sigmoid) probabilities, such as SigLIP; this "
                           "model's scoring is softmax: its probabilities are shared out among the labels given and "
                           "sum to 1, so no threshold on them means 'none of these'. Leave threshold out and use top_k")
    return float(threshold)
