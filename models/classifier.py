"""`ZeroShotClassifier`: class names + a template set -> probabilities for images."""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from ..prompts import TemplateSet
from .errors import InvalidInput, PayloadTooLarge
from .lru import LRUCache
from .zero_shot import class_embeddings, top_k, zero_shot_probs

_SPACES = re.compile(r"\s+")


def clean_labels(labels: object, max_labels: int = 1000, max_label_chars: int = 200) -> list[str]:
    """Whitespace-normalised labels, or `InvalidInput` for an empty, blank, duplicate or oversized list."""
    if not isinstance(labels, (list, tuple)):
        raise InvalidInput("labels must be a list of strings")
    if not labels:
        raise InvalidInput("labels is empty: give at least one class name")
    if len(labels) > max_labels:
        raise PayloadTooLarge(f"{len(labels)} labels is over the limit of {max_labels}")
    cleaned: list[str] = []
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if not isinstance(label, str):
            raise InvalidInput(f"label {i} is not a string")
        label = _SPACES.sub(" ", label).strip()
        if not label:
            raise InvalidInput(f"label {i} is blank")
        if len(label) > max_label_chars:
            raise InvalidInput(f"label {i} is {len(label)} characters long; the limit is {max_label_chars}")
        if label in seen:
            raise InvalidInput(f"label {label!r} appears more than once")
        seen.add(label)
        cleaned.append(label)
    return cleaned


class ZeroShotClassifier:
    """Zero-shot classification with cached class embeddings.

    `encode_texts` maps texts to unit-norm features (a `ClipEncoder.encode_texts`, or a remote
    call to one). Class embeddings are cached per (model id, template content, class list), so a
    repeated request never touches the text tower.
    """

    def __init__(self, encode_texts: Callable[[list[str]], np.ndarray], model_id: str, logit_scale: float,
                 cache_size: int = 64):
        self.encode_texts = encode_texts
        self.model_id = model_id
        self.logit_scale = float(logit_scale)
        self.cache: LRUCache[np.ndarray] = LRUCache(cache_size)

    @classmethod
    def from_encoder(cls, encoder, cache_size: int = 64) -> "ZeroShotClassifier":
        return cls(encoder.encode_texts, encoder.model_id, encoder.logit_scale, cache_size=cache_size)

    def class_embeddings(self, labels: Sequence[str], templates: TemplateSet) -> np.ndarray:
        """(n_labels, dim) unit-norm class embeddings, from the cache when possible."""
        labels = tuple(labels)
        key = (self.model_id, templates.digest, labels)
        return self.cache.get_or_compute(
            key, lambda: class_embeddings(self.encode_texts, labels, templates.templates))

    def probabilities(self, image_features: np.ndarray, labels: Sequence[str],
                      templates: TemplateSet) -> np.ndarray:
        return zero_shot_probs(image_features, self.class_embeddings(labels, templates), self.logit_scale)

    def predict(self, image_features: np.ndarray, labels: Sequence[str], templates: TemplateSet,
                k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) per image, most probable first."""
        if k < 1:
            raise InvalidInput("top_k must be at least 1")
        return top_k(self.probabilities(image_features, labels, templates), list(labels), k)
