"""Few-shot adaptation of the zero-shot head, on cached image features (seconds on a CPU): `fit` and
`adapt_folder` (`zest adapt`).

Every method starts from the zero-shot classifier and has a setting at which it *is* that classifier, so
cross-validation can always fall back to zero-shot. Why Tip-Adapter is the default, measured by
`python -m zest.training.vision.compare`: the README's "How it adapts".
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from ...models.heads import HeadParams
from ...models.zero_shot import softmax

# W0: the class embeddings of the class names under a template set, at the model's logit scale `s`.
# - tip-adapter (Zhang et al., ECCV 2022; training-free): W0 plus a cache of the training features K with labels
#   V: logits = s·f·W0ᵀ + α·exp(−β(1 − f·Kᵀ))·onehot(V); α = 0 is zero-shot. The head holds K (N×D), so for
#   thousands of images per class prefer linear (C×D).
# - linear: (W, b) from (W0, 0), cross-entropy + λ‖W − W0‖² (decay toward zero-shot), full-batch L-BFGS;
#   λ = ∞ is zero-shot.
# - wise-ft (Wortsman et al., CVPR 2022, on the head): fine-tune from W0 with no pull toward it, then
#   W = (1 − α)·W0 + α·W_ft; α = 0 is zero-shot.
METHODS = ("tip-adapter", "linear", "wise-ft")
DEFAULT_METHOD = "tip-adapter"
DEFAULT_FOLDS = 4

TIP_ALPHAS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
TIP_BETAS = (1.0, 3.0, 5.5, 10.0)
LAMBDAS = (math.inf, 1.0, 0.1, 0.01, 1e-3, 1e-4)
WISE_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
# used when cross-validation is impossible (every class has a single training image); picked on a pilot run
# (other scenes) before the measurement in the docstring
DEFAULTS = {"tip-adapter": {"alpha": 20.0, "beta": 3.0}, "linear": {"lambda": 0.01}, "wise-ft": {"alpha": 0.5}}
WISE_FT_LAMBDA = 1e-4  # the "fine-tuned" end of WiSE-FT: barely regularised, so its loss has a minimum


@dataclass(frozen=True, eq=False)
class Fitted(HeadParams):
    """The numbers of an adapted head (models.heads.HeadParams: how they apply), with how they were chosen."""

    method: str
    params: dict = field(default_factory=dict)  # the chosen hyperparameters
    cv: dict = field(default_factory=dict)  # folds, cv_top1 of the choice, of zero-shot, and how chosen


def stratified_folds(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold number of each sample: every class dealt round-robin over the folds, from a rotating start so
    that classes with fewer than k images still spread over different folds."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (start + np.arange(len(idx))) % k
        start = (start + len(idx)) % k
    return folds


# --------------------------------------------------------------------------------------------- fitting

def fit_linear(features: np.ndarray, labels: np.ndarray, w0: np.ndarray, logit_scale: float, lam: float,
               max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """argmin CE(s·F·Wᵀ + b, y) + λ‖W − W0‖², from (W0, 0), by full-batch L-BFGS (deterministic)."""
    if math.isinf(lam):
        return w0.copy(), np.zeros(len(w0), dtype=np.float32)
    import torch

    f = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    w0_t = torch.as_tensor(w0, dtype=torch.float64)
    w = w0_t.clone().requires_grad_(True)
    b = torch.zeros(len(w0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logit_scale * f @ w.T + b, y) + lam * ((w - w0_t) ** 2).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads cost more than they bring (and stay deterministic)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def _scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean log-loss)."""
    acc = float(np.mean(probs.argmax(1) == labels))
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    return acc, nll


def _make(method: str, params: dict, features, labels, w0, logit_scale, finetuned=None) -> Fitted:
    """The head of `method` with `params`, fitted on (features, labels)."""
    zeros = np.zeros(len(w0), dtype=np.float32)
    if method == "tip-adapter":
        return Fitted(method=method, weight=w0, bias=zeros, logit_scale=logit_scale,
                      cache_keys=np.asarray(features, np.float32), cache_labels=np.asarray(labels, np.int64),
                      alpha=params["alpha"], beta=params["beta"], params=params)
    if method == "linear":
        w, b = fit_linear(features, labels, w0, logit_scale, params["lambda"])
        return Fitted(method=method, weight=w, bias=b, logit_scale=logit_scale, params=params)
    if method == "wise-ft":
        w_ft, b_ft = finetuned if finetuned is not None else fit_linear(features, labels, w0, logit_scale,
                                                                         WISE_FT_LAMBDA)
        a = params["alpha"]
        return Fitted(method=method, weight=((1 - a) * w0 + a * w_ft).astype(np.float32),
                      bias=(a * b_ft).astype(np.float32), logit_scale=logit_scale, params=params)
    raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")


def _grid(method: str) -> list[dict]:
    if method == "tip-adapter":
        return [{"alpha": a, "beta": b} for a, b in itertools.product(TIP_ALPHAS, TIP_BETAS)]
    if method == "linear":
        return [{"lambda": lam} for lam in LAMBDAS]
    return [{"alpha": a} for a in WISE_ALPHAS]


def _closeness(method: str, params: dict) -> float:
    """Larger = closer to zero-shot (the last tie-breaker)."""
    if method == "linear":
        return params["lambda"]
    return -params["alpha"]


def fit(method: str, features: np.ndarray, labels: np.ndarray, w0: np.ndarray, logit_scale: float,
        folds: int = DEFAULT_FOLDS, seed: int = 0) -> Fitted:
    """Adapt the zero-shot head `w0` (C×D class embeddings) to labelled training features.

    The method's hyperparameters are chosen by stratified k-fold cross-validation on these features only:
    highest pooled fold accuracy, ties to the setting closest to zero-shot (smallest α, largest λ), then to
    the lower log-loss. With one example per class nothing can be validated: `DEFAULTS` are used."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    w0 = np.asarray(w0, dtype=np.float32)
    k = min(folds, int(np.bincount(labels).max(initial=0)))
    if k < 2:
        params = dict(DEFAULTS[method])
        out = _make(method, params, features, labels, w0, logit_scale)
        return dataclasses.replace(out, cv={"folds": 0, "chosen_by": "defaults (too few images per class to "
                                                                     "cross-validate)"})
    fold_of = stratified_folds(labels, k, seed)
    grid = _grid(method)
    totals = {i: [0.0, 0.0] for i in range(len(grid))}
    zero_shot_acc = 0.0
    for f in range(k):
        tr, va = fold_of != f, fold_of == f
        finetuned = fit_linear(features[tr], labels[tr], w0, logit_scale, WISE_FT_LAMBDA) \
            if method == "wise-ft" else None
        zs = softmax(logit_scale * features[va].astype(np.float64) @ w0.T.astype(np.float64))
        zero_shot_acc += _scores(zs, labels[va])[0] * va.sum() / len(labels)
        for i, params in enumerate(grid):
            head = _make(method, params, features[tr], labels[tr], w0, logit_scale, finetuned)
            acc, nll = _scores(head.probabilities(features[va]), labels[va])
            totals[i][0] += acc * va.sum() / len(labels)  # pooled over folds: every image counts once
            totals[i][1] += nll * va.sum() / len(labels)
    best = max(range(len(grid)), key=lambda i: (round(totals[i][0], 9), _closeness(method, grid[i]),
                                                -round(totals[i][1], 9)))
    out = _make(method, grid[best], features, labels, w0, logit_scale)
    return dataclasses.replace(out, cv={"folds": k, "cv_top1": totals[best][0], "cv_zero_shot_top1": zero_shot_acc,
                                        "chosen_by": f"{k}-fold cross-validation on the training images"})


# --------------------------------------------------------------------------------------------- a folder

def adapt_folder(folder, encoder, name: str, method: str = DEFAULT_METHOD, templates: str = "imagenet-simple",
                 holdout: float = 0.25, seed: int = 0, folds: int = DEFAULT_FOLDS, cache=None,
                 progress: bool | None = None, compare: bool = False, batch_size: int = 32, refit: bool = True):
    """`zest adapt`: split `folder`, adapt on the training part, measure on the held-out part; then (`refit`,
    the default) fit the chosen method with its chosen settings again on every labelled image, which is the
    head returned. The held-out numbers are those of the head fit on the training part: a lower bound for
    the refit head, which saw a third more examples.

    Returns (head, report). The head (models.heads.Head) carries the held-out metrics; the report also
    has the per-class held-out recall of zero-shot and adapted, and with `compare` every method's
    held-out numbers (the head is always `method`'s)."""
    import datetime
    import time

    from ... import __version__
    from ...models.errors import InvalidInput
    from ...models.heads import Head, check_name
    from ...prompts import load_template_set
    from .data import holdout_split
    from .evaluate import TextEmbeddings, class_texts
    from .features import folder_features
    from .metrics import summarize

    try:
        check_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    template_set = load_template_set(templates)
    t0 = time.perf_counter()
    feats = folder_features(folder, encoder, cache=cache, batch_size=batch_size, progress=progress)
    t_features = time.perf_counter() - t0
    classes = folder.names
    counts = np.bincount(feats.labels, minlength=len(classes))
    if (counts >= 2).sum() == 0:
        raise InvalidInput("every class has fewer than 2 readable images: nothing can be held out to measure the "
                           "adapted head (give each class at least 2 images, better 8 or more)")
    train, held = holdout_split(feats.labels, holdout, seed)
    t1 = time.perf_counter()
    w0 = TextEmbeddings(encoder.encode_texts).class_embeddings(class_texts(folder.classes, template_set.templates))
    t_text = time.perf_counter() - t1
    s = encoder.logit_scale
    f_train, y_train, f_held, y_held = feats.features[train], feats.labels[train], feats.features[held], \
        feats.labels[held]

    def measure(probs):
        m = summarize(probs, y_held, classes)
        return m, {"top1": m["top1"], "top5": m["top5"], "balanced_accuracy": m["balanced_accuracy"]}

    zs_full, zs = measure(softmax(s * f_held.astype(np.float64) @ w0.T.astype(np.float64)))
    t2 = time.perf_counter()
    fitted = fit(method, f_train, y_train, w0, s, folds=folds, seed=seed)
    t_fit = time.perf_counter() - t2
    ad_full, ad = measure(fitted.probabilities(f_held))
    compared = {}
    if compare:
        for m in METHODS:
            other = fitted if m == method else fit(m, f_train, y_train, w0, s, folds=folds, seed=seed)
            compared[m] = {**measure(other.probabilities(f_held))[1], "params": other.params}
    fit_on = train
    if refit:  # the method and its settings stay as chosen above; only the numbers see every image
        fit_on = np.arange(len(feats.labels))
        fitted = dataclasses.replace(_make(method, fitted.params, feats.features, feats.labels, w0, s), cv=fitted.cv)
    missing = [classes[c] for c in range(len(classes)) if counts[c] == 0]
    no_held = [classes[c] for c in range(len(classes)) if counts[c] == 1]
    metrics = {"heldout_images": len(held), "train_images": len(train), "holdout": holdout, "seed": seed,
               "zero_shot_top1": zs["top1"], "adapted_top1": ad["top1"], "zero_shot_top5": zs["top5"],
               "adapted_top5": ad["top5"], "cv_top1": fitted.cv.get("cv_top1"), "fit_images": len(fit_on),
               "refit_on_all": refit}
    meta = {"method": method, "params": fitted.params, "templates": template_set.name, "metrics": metrics,
            "cv": fitted.cv, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "zest_version": __version__,
            "data": {"dir": str(folder.root), "images_per_class": dict(zip(classes, counts.tolist()))},
            "train_images": [feats.digests[i] for i in fit_on]}
    head = Head(name=name, classes=tuple(classes), model_id=encoder.model_id, weight=fitted.weight,
                bias=fitted.bias, logit_scale=s, cache_keys=fitted.cache_keys, cache_labels=fitted.cache_labels,
                alpha=fitted.alpha, beta=fitted.beta, meta=meta)
    report = {"name": name, "dir": str(folder.root), "model": encoder.model_id, "method": method,
              "params": fitted.params, "cv": fitted.cv, "templates": template_set.name,
              "n_classes": len(classes), "classes": classes, "n_images": len(feats.labels),
              "n_train": len(train), "n_heldout": len(held), "holdout": holdout, "seed": seed,
              "refit": {"on_all_images": refit, "images": len(fit_on),
                        "cache_size": 0 if fitted.cache_keys is None else len(fitted.cache_keys)},
              "heldout": {"zero_shot": zs, "adapted": ad, "per_class": [
                  {"class": c, "support": a["support"], "zero_shot_recall": z["recall"], "adapted_recall": a["recall"]}
                  for c, z, a in zip(classes, zs_full["per_class"], ad_full["per_class"])]},
              "compare": compared, "classes_without_images": missing, "classes_without_heldout": no_held,
              "skipped": [{"path": x.path, "reason": x.reason} for x in feats.skipped],
              "encoded_images": feats.encoded,
              "seconds": {"features": round(t_features, 2), "class_texts": round(t_text, 2), "fit": round(t_fit, 3)}}
    return head, report
