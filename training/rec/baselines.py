"""Baselines for the recommender benchmark: random, popularity, content-KNN, text-popularity (+ blend), LightFM.

Every scorer returns a (n_users, n_candidates) score matrix; higher is better.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def random_scores(n_users: int, n_candidates: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n_users, n_candidates))


def content_knn_scores(history_emb: np.ndarray, histories: Sequence[np.ndarray], cand_emb: np.ndarray) -> np.ndarray:
    """Cosine between the mean of each history's (unit) text embeddings and each candidate's."""
    prof = np.stack([history_emb[np.asarray(h)].mean(axis=0) for h in histories])
    prof /= np.linalg.norm(prof, axis=1, keepdims=True) + 1e-12
    cand = cand_emb / (np.linalg.norm(cand_emb, axis=1, keepdims=True) + 1e-12)
    return prof @ cand.T


class TextPopularity:
    """Ridge regression from an item's text embedding to log(1 + its training interaction count)."""

    def __init__(self, alpha: float = 10.0) -> None:
        self.alpha = alpha
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, emb: np.ndarray, counts: np.ndarray) -> TextPopularity:
        y = np.log1p(np.asarray(counts, dtype=np.float64))
        X = np.asarray(emb, dtype=np.float64)
        mu, ymu = X.mean(axis=0), y.mean()
        Xc = X - mu
        A = Xc.T @ Xc + self.alpha * np.eye(X.shape[1])
        self.w = np.linalg.solve(A, Xc.T @ (y - ymu))
        self.b = ymu - mu @ self.w
        return self

    def predict(self, emb: np.ndarray) -> np.ndarray:
        assert self.w is not None, "fit first"
        return np.asarray(emb, dtype=np.float64) @ self.w + self.b


def zscore_rows(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 1:
        return (s - s.mean()) / (s.std() + 1e-12)
    return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-12)


def blend_scores(knn: np.ndarray, pop: np.ndarray, weight: float) -> np.ndarray:
    """``weight * z(knn) + (1 - weight) * z(pop)``, z-scored over the candidates (per user for knn)."""
    return weight * zscore_rows(knn) + (1.0 - weight) * zscore_rows(pop)[None, :]


# ------------------------------------------------------------------------------------------------ LightFM

_WORD = re.compile(r"[a-z0-9]+")


def text_tokens(text: str) -> list[str]:
    return ["w:" + w for w in _WORD.findall(text.lower())]


class LightFMBaseline:
    """LightFM (WARP) with item content features; items outside the training catalogue are scored by their
    content features alone (their identity features, if any, are left out). Needs ``pip install lightfm``."""

    def __init__(self, no_components: int = 64, learning_rate: float = 0.05, item_alpha: float = 1e-6,
                 user_alpha: float = 1e-6, use_identity: bool = True, seed: int = 0, threads: int = 1) -> None:
        from lightfm import LightFM  # noqa: F401  (fail early if missing)

        self.params = {"no_components": no_components, "learning_rate": learning_rate, "item_alpha": item_alpha,
                           "user_alpha": user_alpha, "use_identity": use_identity}
        self.use_identity = use_identity
        self.seed = seed
        self.threads = threads
        self.model = None
        self._feat: dict[str, int] = {}

    def build_features(self, item_tokens: Sequence[Sequence[str]], catalogue: np.ndarray, min_df: int = 2):
        """Sparse item-feature matrix: identity columns for catalogue items (if used) + content tokens seen in
        at least ``min_df`` catalogue items (vocabulary from the catalogue only); rows sum to 1."""
        from scipy.sparse import csr_matrix

        n = len(item_tokens)
        in_cat = np.zeros(n, bool)
        in_cat[catalogue] = True
        df: dict[str, int] = {}
        for k in np.flatnonzero(in_cat).tolist():
            for t in set(item_tokens[k]):
                df[t] = df.get(t, 0) + 1
        vocab = sorted(t for t, c in df.items() if c >= min_df)
        n_id = n if self.use_identity else 0
        self._feat = {t: n_id + j for j, t in enumerate(vocab)}
        rows, cols = [], []
        for i in range(n):
            feats = sorted({self._feat[t] for t in item_tokens[i] if t in self._feat})
            if self.use_identity and in_cat[i]:
                feats.append(i)
            rows.extend([i] * len(feats))
            cols.extend(feats)
        data = np.ones(len(rows), np.float32)
        F = csr_matrix((data, (rows, cols)), shape=(n, n_id + len(vocab)))
        sums = np.asarray(F.sum(axis=1)).ravel()
        sums[sums == 0] = 1.0
        F = csr_matrix(F.multiply(1.0 / sums[:, None]))
        return F

    def fit_epochs(self, n_users: int, users: np.ndarray, items: np.ndarray, features, epochs: int, model=None):
        from lightfm import LightFM
        from scipy.sparse import coo_matrix

        if model is None:
            p = {k: v for k, v in self.params.items() if k != "use_identity"}
            model = LightFM(loss="warp", random_state=self.seed, **p)
        inter = coo_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, features.shape[0]))
        inter.sum_duplicates()
        inter.data[:] = 1.0
        model.fit_partial(inter, item_features=features, epochs=epochs, num_threads=self.threads)
        self.model = model
        return model

    def scores(self, users: np.ndarray, cand_items: np.ndarray, features) -> np.ndarray:
        assert self.model is not None, "fit() first"
        ub, ue = self.model.get_user_representations()
        ib, ie = self.model.get_item_representations(features[cand_items])
        return ue[users] @ ie.T + ib[None, :] + ub[users][:, None]
