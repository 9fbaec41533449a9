"""Fit and score each method of the benchmark on one split: ZESRec and its baselines, every
hyper-parameter chosen on the split's validation task only."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np

from ...models.rec.model import ZesRecConfig, item_vectors, user_vectors
from .baselines import (
    LightFMBaseline,
    TextPopularity,
    blend_scores,
    content_knn_scores,
    random_scores,
)
from .protocols import VAL_METRIC, Split, Task
from .trainer import TrainConfig, fit

log = logging.getLogger(__name__)




# ---------------------------------------------------------------------------------------------- methods


@dataclass
class MethodResult:
    test: dict[str, float]
    val: float
    params: dict
    seconds: float


def run_zesrec(split: Split, model_cfg: ZesRecConfig, train_cfg: TrainConfig) -> tuple[MethodResult, object]:
    t0 = time.perf_counter()

    def scores(net, task: Task) -> np.ndarray:
        hist_vecs, _ = item_vectors(net, split.input_emb)
        cv, cb = item_vectors(net, split.target_emb[task.candidates])
        U = user_vectors(net, hist_vecs, task.histories)
        return U @ cv.T + cb[None, :]

    def val_fn(net) -> float:
        return split.val.mean(scores(net, split.val))[VAL_METRIC]

    cfg = copy.deepcopy(train_cfg)
    cfg.seed = split.seed
    fr = fit(split.input_emb, split.target_emb, split.train_seqs, split.catalogue, model_cfg, cfg, val_fn)
    test = split.test_metrics(scores(fr.net, split.test))
    params = {"best_epoch": fr.best_epoch, "epochs_run": len(fr.history), "train_seconds": round(fr.seconds, 1)}
    return MethodResult(test, fr.best_val, params, time.perf_counter() - t0), fr


def _counts(split: Split, n_items: int) -> np.ndarray:
    return np.bincount(split.train.item, minlength=n_items).astype(np.float64)


def run_baselines(split: Split, seed: int, lightfm: bool = True, lightfm_epochs: int = 40) -> dict[str, MethodResult]:
    out: dict[str, MethodResult] = {}
    val, test = split.val, split.test
    n_items = len(split.input_emb)

    t0 = time.perf_counter()
    out["random"] = MethodResult(split.test_metrics(random_scores(len(test.users), len(test.candidates), seed)),
                                 val.mean(random_scores(len(val.users), len(val.candidates), seed))[VAL_METRIC], {},
                                 time.perf_counter() - t0)

    counts = _counts(split, n_items)
    if split.protocol == "warm":
        t0 = time.perf_counter()
        pop_val = val.mean(np.tile(counts[val.candidates], (len(val.users), 1)))[VAL_METRIC]
        # at test time the validation interactions are known too, so they count
        counts_test = split.known_counts if split.known_counts is not None else counts
        out["popularity (train counts)"] = MethodResult(
            split.test_metrics(np.tile(counts_test[test.candidates], (len(test.users), 1))), pop_val, {}, time.perf_counter() - t0)

    # content-KNN: history profile from tagged (input) or untagged (target) texts; chosen on validation
    t0 = time.perf_counter()
    variants = {"input": split.input_emb, "target": split.target_emb}
    if split.input_emb is split.target_emb:
        variants = {"input": split.input_emb}
    knn_val = {k: content_knn_scores(e, val.histories, split.target_emb[val.candidates]) for k, e in variants.items()}
    knn_val_m = {k: val.mean(s)[VAL_METRIC] for k, s in knn_val.items()}
    knn_var = max(knn_val_m, key=knn_val_m.get)
    knn_test = content_knn_scores(variants[knn_var], test.histories, split.target_emb[test.candidates])
    out["content-KNN"] = MethodResult(split.test_metrics(knn_test), knn_val_m[knn_var], {"history_text": knn_var},
                                      time.perf_counter() - t0)

    # text-popularity: ridge text embedding -> log(1 + count) over the training catalogue
    t0 = time.perf_counter()
    cat = split.catalogue
    best = None
    for alpha in (0.01, 0.1, 1.0, 10.0, 100.0):
        tp = TextPopularity(alpha).fit(split.target_emb[cat], counts[cat])
        pv = tp.predict(split.target_emb[val.candidates])
        m = val.mean(np.tile(pv, (len(val.users), 1)))[VAL_METRIC]
        if best is None or m > best[0]:
            best = (m, alpha, tp, pv)
    tp_val, alpha, tp, pop_val_scores = best
    pop_test_scores = tp.predict(split.target_emb[test.candidates])
    out["text-popularity"] = MethodResult(split.test_metrics(np.tile(pop_test_scores, (len(test.users), 1))), tp_val,
                                          {"alpha": alpha}, time.perf_counter() - t0)

    t0 = time.perf_counter()
    best = None
    for w in np.round(np.linspace(0, 1, 21), 2):
        m = val.mean(blend_scores(knn_val[knn_var], pop_val_scores, float(w)))[VAL_METRIC]
        if best is None or m > best[0]:
            best = (m, float(w))
    out["text-popularity + content-KNN blend"] = MethodResult(
        split.test_metrics(blend_scores(knn_test, pop_test_scores, best[1])), best[0],
        {"knn_weight": best[1], "alpha": alpha, "history_text": knn_var}, time.perf_counter() - t0)

    if lightfm:
        try:
            out["LightFM (WARP, item features)"] = run_lightfm(split, seed, lightfm_epochs)
        except ImportError:
            log.warning("lightfm is not installed; skipping the LightFM baseline (pip install lightfm)")
    return out


def run_lightfm(split: Split, seed: int, max_epochs: int = 40, step: int = 2, patience: int = 3) -> MethodResult:
    t0 = time.perf_counter()
    n_users = split.train.n_users
    best_overall = None
    for use_identity in (True, False):
        lf = LightFMBaseline(use_identity=use_identity, seed=seed)
        F = lf.build_features(split.tokens, split.catalogue)
        model, best, bad = None, None, 0
        for ep in range(step, max_epochs + 1, step):
            model = lf.fit_epochs(n_users, split.train.user, split.train.item, F, step, model)
            m = split.val.mean(lf.scores(split.val.users, split.val.candidates, F))[VAL_METRIC]
            if best is None or m > best[0]:
                best, bad = (m, ep, copy.deepcopy(model)), 0
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_overall is None or best[0] > best_overall[0]:
            best_overall = (best[0], best[1], best[2], use_identity, F, lf)
    m, ep, model, use_identity, F, lf = best_overall
    lf.model = model
    test = split.test_metrics(lf.scores(split.test.users, split.test.candidates, F))
    params = {"epochs": ep, "identity_features": use_identity, "n_features": int(F.shape[1]),
              "no_components": lf.params["no_components"]}
    return MethodResult(test, m, params, time.perf_counter() - t0)
