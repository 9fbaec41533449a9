"""The zero-shot head: pure functions over normalised features (no model, no state).

A model's *scoring* is how its logits become probabilities, as it was trained: "softmax" over the labels for
contrastive (InfoNCE) models such as OpenAI CLIP, "sigmoid" per label for models trained with the sigmoid
loss (SigLIP, SigLIP 2), which carry a learned `logit_bias` (open_clip `CLIP.get_logits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from .topk import top_k_indices


def class_embeddings(encode_texts: Callable[[list[str]], np.ndarray], labels: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """One embedding per label: the mean of its normalised template embeddings, re-normalised.

    This is the prompt ensembling of the CLIP paper. `encode_texts` must return unit-norm rows;
    `templates` must already be validated (one bare `{}` each).
    """
    return ensemble(encode_texts(prompt_texts(labels, templates)), len(labels), len(templates))


def prompt_texts(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every label, label by label: what `ensemble` averages back."""
    return [t.format(label) for label in labels for t in templates]


def ensemble(text_features: np.ndarray, n_labels: int, n_templates: int) -> np.ndarray:
    """The features of `prompt_texts` -> one unit-norm row per label (their mean, re-normalised)."""
    feats = np.asarray(text_features, dtype=np.float32).reshape(n_labels, n_templates, -1)
    mean = feats.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


Scoring = Literal["softmax", "sigmoid"]


def scoring_of(logit_bias: float | None) -> Scoring:
    """A model with a learned logit bias was trained with the sigmoid loss: its probabilities are per label."""
    return "softmax" if logit_bias is None else "sigmoid"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))  # exact, and no overflow warning for large |logits|


def zero_shot_logits(image_features: np.ndarray, class_emb: np.ndarray, logit_scale: float,
                     logit_bias: float | None = None) -> np.ndarray:
    """open_clip's image logits: logit_scale · image · classesᵀ (+ logit_bias), float64 (n_images, n_classes)."""
    logits = logit_scale * (image_features.astype(np.float64) @ class_emb.T.astype(np.float64))
    return logits if logit_bias is None else logits + float(logit_bias)


def zero_shot_probs(image_features: np.ndarray, class_emb: np.ndarray, logit_scale: float,
                    logit_bias: float | None = None) -> np.ndarray:
    """The model's own probabilities, (n_images, n_classes): softmax over the labels of the logits, or for a
    model with a logit bias, sigmoid(logit_scale · sim + logit_bias) per label (these need not sum to 1)."""
    logits = zero_shot_logits(image_features, class_emb, logit_scale, logit_bias)
    probs = softmax(logits) if logit_bias is None else sigmoid(logits)
    return probs.astype(np.float32)


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row, the k most probable labels, highest first (ties keep label order)."""
    order = top_k_indices(probs, k)
    return [[(labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]
