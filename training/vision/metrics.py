"""Classification metrics from a probability matrix: pure numpy, no model.

Conventions (those of scikit-learn's classification_report): the confusion matrix has true classes as
rows and predicted classes as columns; a class's precision is correct / predicted as it (None when
nothing was predicted as it), its recall correct / support (None when it has no images). Top-k counts an
image as right when its true class is among the k most probable (ties keep class order, like the
service's top_k).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def ranking(probs: np.ndarray) -> np.ndarray:
    """Class indices per row, most probable first (stable: ties keep class order)."""
    return np.argsort(-np.asarray(probs), axis=1, kind="stable")


def topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = max(1, min(k, probs.shape[1]))
    return (ranking(probs)[:, :k] == np.asarray(labels)[:, None]).any(axis=1)


def confusion_matrix(labels: ArrayLike, predicted: ArrayLike, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return m


def per_class(confusion: np.ndarray, classes: Sequence[str]) -> list[dict]:
    rows = []
    for i, name in enumerate(classes):
        tp, support, predicted = int(confusion[i, i]), int(confusion[i].sum()), int(confusion[:, i].sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = (2 * precision * recall / (precision + recall) if precision and recall else
              (0.0 if precision is not None and recall is not None else None))
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support,
                     "predicted": predicted, "correct": tp})
    return rows


def summarize(probs: np.ndarray, true_labels: ArrayLike, classes: Sequence[str], k: int = 5) -> dict:
    """top-1, top-k, balanced accuracy, per-class rows and the confusion matrix."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(true_labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"n_images": 0, "top1": None, f"top{k}": None, "balanced_accuracy": None,
                "per_class": per_class(np.zeros((len(classes),) * 2, np.int64), classes),
                "confusion": np.zeros((len(classes),) * 2, np.int64).tolist()}
    predicted = ranking(probs)[:, 0]
    confusion = confusion_matrix(labels, predicted, len(classes))
    rows = per_class(confusion, classes)
    recalls = [r["recall"] for r in rows if r["recall"] is not None]
    return {"n_images": n, "top1": float(topk_hits(probs, labels, 1).mean()),
            f"top{k}": float(topk_hits(probs, labels, k).mean()),
            "balanced_accuracy": float(np.mean(recalls)), "per_class": rows, "confusion": confusion.tolist()}
