"""`ZeroShotClassifier`: class names + a template set -> probabilities for images."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..prompts import TemplateSet
from .class_cache import ClassEmbeddingCache, text_tower_fingerprint
from .errors import InvalidInput
from .limits import check_chars, check_count
from .zero_shot import Scoring, class_embeddings, scoring_of, top_k, zero_shot_probs

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


class ZeroShotClassifier:
    """Zero-shot classification with class embeddings cached per label.

    `encode_texts` maps texts to unit-norm features (a `ClipEncoder.encode_texts`, or a remote call to
    one). Each label's embedding (the mean of its prompts over a template set) is cached under (model,
    template set, label) in a `ClassEmbeddingCache`: a repeated request never touches the text tower, and a
    label list that shares labels with earlier ones encodes only the new labels. Give `cache_dir` to keep
    the cache across restarts.
    """

    def __init__(self, encode_texts: Callable[[list[str]], np.ndarray], model_id: str, logit_scale: float,
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
        self._cache_lock = threading.Lock()
        self._compute_lock = threading.Lock()  # one encoder: concurrent misses queue instead of duplicating work

    @classmethod
    def from_encoder(cls, encoder, cache_bytes: int = 256 * 2**20,
                     cache_dir: str | Path | None = None) -> ZeroShotClassifier:
        return cls(encoder.encode_texts, encoder.model_id, encoder.logit_scale, cache_bytes=cache_bytes,
                   cache_dir=cache_dir, logit_bias=getattr(encoder, "logit_bias", None))

    @property
    def scoring(self) -> Scoring:
        return scoring_of(self.logit_bias)

    @property
    def cache(self) -> ClassEmbeddingCache:
        """Opened on first use: its namespace needs one probe through the text tower."""
        with self._cache_lock:
            if self._cache is None:
                namespace = f"{self.model_id}@{text_tower_fingerprint(self.encode_texts)}"
                self._cache = ClassEmbeddingCache(namespace, self._cache_bytes, self._cache_dir,
                                                  observer=self._cache_observer)
            return self._cache

    def class_embeddings(self, labels: Sequence[str], templates: TemplateSet) -> np.ndarray:
        """(n_labels, dim) unit-norm class embeddings; only labels never seen with these templates are encoded."""
        labels = list(labels)
        cache = self.cache
        found = cache.get_many(templates.digest, labels)
        missing = [label for label in labels if label not in found]
        if missing:
            with self._compute_lock:
                found.update(cache.get_many(templates.digest, missing, count=False))  # filled while we waited?
                missing = [label for label in labels if label not in found]
                if missing:
                    fresh = class_embeddings(self.encode_texts, missing, templates.templates)
                    new = dict(zip(missing, fresh))
                    cache.put_many(templates.digest, new)
                    found.update(new)
        return np.stack([found[label] for label in labels]).astype(np.float32)

    def probabilities(self, image_features: np.ndarray, labels: Sequence[str],
                      templates: TemplateSet) -> np.ndarray:
        """The model's own probabilities (its `scoring`), (n_images, n_labels) in label order."""
        return zero_shot_probs(image_features, self.class_embeddings(labels, templates), self.logit_scale,
                               self.logit_bias)

    def predict(self, image_features: np.ndarray, labels: Sequence[str], templates: TemplateSet,
                k: int = 5, threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, most probable first; with `threshold` (sigmoid scoring only),
        only the labels whose probability is at least it."""
        if k < 1:
            raise InvalidInput("top_k must be at least 1")
        threshold = check_threshold(threshold, self.scoring)
        predictions = top_k(self.probabilities(image_features, labels, templates), list(labels), k)
        if threshold is None:
            return predictions
        return [[(label, p) for label, p in row if p >= threshold] for row in predictions]


def check_threshold(threshold: object, scoring: Scoring) -> float | None:
    """`threshold` as a float (None stays None), or InvalidInput unless it is a probability in [0, 1] and the
    model's scoring is sigmoid."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise InvalidInput("threshold must be a number between 0 and 1")
    if scoring != "sigmoid":
        raise InvalidInput("threshold needs a model with per-label (sigmoid) probabilities, such as SigLIP; this "
                           "model's scoring is softmax: its probabilities are shared out among the labels given and "
                           "sum to 1, so no threshold on them means 'none of these'. Leave threshold out and use top_k")
    return float(threshold)
