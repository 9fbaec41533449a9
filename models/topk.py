"""Top-k selection, the one copy zest uses (zero-shot predictions, recommendations, ranking metrics)."""

from __future__ import annotations

import numpy as np


def _top_k_row(s: np.ndarray, k: int) -> np.ndarray:
    m = len(s)
    if k == 0:
        return np.zeros(0, np.int64)
    if k >= m:
        return np.argsort(-s, kind="stable")
    kth = np.partition(s, m - k)[m - k]  # the k-th largest value: O(m)
    above = np.flatnonzero(s > kth)
    ties = np.flatnonzero(s == kth)[: k - len(above)]  # ties at the boundary: the lowest indices
    chosen = np.concatenate([above, ties])
    return chosen[np.lexsort((chosen, -s[chosen]))]


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores along the last axis, best first; ties go to the lower index
    (exactly what a stable descending sort gives), in O(m) selection plus a sort of the k chosen.

    ``scores`` is (m,) or (n, m); ``k`` is clipped to [0, m].
    """
    scores = np.asarray(scores)
    k = max(0, min(int(k), scores.shape[-1]))
    if scores.ndim == 1:
        return _top_k_row(scores, k)[:k].astype(np.int64)
    rows = [_top_k_row(row, k)[:k] for row in scores.reshape(-1, scores.shape[-1])]
    out = np.stack(rows) if rows else np.zeros((0, k), np.int64)
    return out.reshape(scores.shape[:-1] + (k,)).astype(np.int64)
