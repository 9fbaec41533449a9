"""Top-K ranking metrics with binary relevance.

* Recall@K = hits in top K / min(K, |relevant|)  (the "truncated" recall of Liang et al. 2018, so a perfect
  ranking scores 1 even when a user has more than K relevant items);
* NDCG@K   = sum over hits of 1/log2(rank + 1) / the same for an ideal ranking of min(K, |relevant|) hits.

Users with no relevant candidate are skipped by the callers (they are not test users).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...models.topk import top_k_indices


def ranking_metrics(
    scores: np.ndarray,
    relevant: Sequence[np.ndarray],
    ks: Sequence[int] = (10, 20),
    exclude: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K. ``scores``: (U, C) over candidates; ``relevant[u]``/``exclude[u]``:
    candidate positions. Excluded candidates are never ranked (e.g. items already in the history)."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for u, ex in enumerate(exclude):
            if len(ex):
                scores[u, ex] = -np.inf
    kmax = max(ks)
    top = top_k_indices(scores, kmax)
    discounts = 1.0 / np.log2(np.arange(2, max(kmax, top.shape[1]) + 2))
    out: dict[str, np.ndarray] = {}
    hits = np.zeros(top.shape, dtype=bool)
    n_rel = np.array([len(r) for r in relevant], dtype=np.float64)
    for u, rel in enumerate(relevant):
        hits[u] = np.isin(top[u], rel)
    for k in ks:
        h = hits[:, :k]  # fewer columns when there are fewer than k candidates
        denom = np.minimum(n_rel, k)
        out[f"recall@{k}"] = h.sum(axis=1) / denom
        dcg = (h * discounts[: h.shape[1]]).sum(axis=1)
        idcg = np.array([discounts[: int(m)].sum() for m in denom])
        out[f"ndcg@{k}"] = dcg / idcg
    return out


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in per_user.items()}
