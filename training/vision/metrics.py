"""Classification metrics from a probability matrix: pure numpy, no model.

Conventions (those of scikit-learn's classification_report): the confusion matrix has true classes as
rows and predicted classes as columns; a class's precision is correct / predicted as it (None when
nothing was predicted as it), its recall correct / support (None when it has no images). Top-k counts an
image as right when its true class is among the k most probable (ties keep class order, like the
service's top_k).

Calibration (Guo et al., "On Calibration of Modern Neural Networks", 2017): each image's confidence is its
top-1 probability; images are put in `n_bins` equal-width bins of confidence, (lo, hi] with 0 in the first;
the expected calibration error is the image-weighted mean over bins of |accuracy - mean confidence|. For a
sigmoid (SigLIP) model the confidence is the top label's own probability, which is what its scores claim.
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


def calibration(probs: np.ndarray, labels: ArrayLike, n_bins: int = 15) -> dict:
    """Expected calibration error and the reliability bins (count, accuracy, mean confidence per bin)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    if len(y) == 0:
        return {"ece": None, "n_bins": n_bins, "bins": []}
    confidence = p.max(axis=1)
    correct = ranking(p)[:, 0] == y
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        bin_row: dict = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "accuracy": None,
                         "confidence": None}
        if count:
            accuracy, mean_conf = float(correct[inside].mean()), float(confidence[inside].mean())
            ece += count / len(y) * abs(accuracy - mean_conf)
            bin_row |= {"accuracy": accuracy, "confidence": mean_conf}
        bins.append(bin_row)
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}
