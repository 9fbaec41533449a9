"""The zero-shot head: pure functions over normalised features (no model, no state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .topk import top_k_indices


def class_embeddings(encode_texts: Callable[[list[str]], np.ndarray], labels: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """One embedding per label: the mean of its normalised template embeddings, re-normalised.

    This is the prompt ensembling of the CLIP paper. `encode_texts` must return unit-norm rows;
    `templates` must already be validated (one bare `{}` each).
    """
    texts = [t.format(label) for label in labels for t in templates]
    feats = np.asarray(encode_texts(texts), dtype=np.float32).reshape(len(labels), len(templates), -1)
    mean = feats.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def zero_shot_probs(image_features: np.ndarray, class_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """softmax(logit_scale · image · classesᵀ), shape (n_images, n_classes)."""
    logits = logit_scale * (image_features.astype(np.float32) @ class_emb.T.astype(np.float32))
    return softmax(logits.astype(np.float64)).astype(np.float32)


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row, the k most probable labels, highest first (ties keep label order)."""
    order = top_k_indices(probs, k)
    return [[(labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]
