"""The ZESRec benchmark (``zest rec eval``): runs every method on every seed of each protocol.

Modules by job: :mod:`.protocols` (data views, cold/warm splits, tasks), :mod:`.methods` (ZESRec and the
baselines on one split), :mod:`.report` (summaries, Markdown), this module (the driver).

Cold-item protocol (the one ZESRec is for), per seed:

1. Items (the whole catalogue, including items nobody interacted with) are shuffled with the seed and split
   into **cold** (20 %) and **warm** (80 %); 20 % of the warm items (16 % of all, about as many as the
   cold items, so validation ranks a candidate set of similar size) are further held out as
   **validation-cold** items, the rest (64 %) are the **training catalogue**.
2. Training sees only interactions with training-catalogue items. No interaction with a cold or
   validation item is ever used to train any model (ZESRec, LightFM, the popularity ridge); cold items
   are not even negatives.
3. Cold and validation items are described *without user-generated tags* (MovieLens ``tags.csv``): a
   brand-new item has no tags yet, and in ml-latest-small tags are themselves interaction traces (92 % of
   distinct (user, movie) tag pairs come from a user who also rated the movie; tagged movies have ~5x the ratings of
   untagged ones), so keeping them would leak the held-out interactions. Warm items keep their tags.
   (``cold_item_tags="keep"`` reproduces the leaky variant for reference.)
4. Validation task: every user with >= 1 interaction with a validation item; history = the user's
   training interactions (chronological); candidates = all validation items; relevant = the user's
   validation items. All hyper-parameters (ZESRec early stopping, ridge alpha, blend weight, content-KNN
   history variant, LightFM epochs / identity features) are chosen on this task only.
5. Test task: every user with >= 1 interaction with a cold item and >= 1 warm interaction; history = the
   user's warm (training + validation) interactions; candidates = **all cold items**; relevant = the
   user's cold items. Models are not re-fitted on validation items.

Warm-item protocol, per seed: each user's interactions sorted by time; the last 5 are test, the 5 before
are validation, the rest train (users with < 13 interactions only train). Candidates = the whole
catalogue minus the user's known items; tags a user applied to one of their own held-out items are
removed from the item text (and from LightFM's features) so the held-out interaction cannot leak through
its tag.

Interactions: every MovieLens rating (any value) is one implicit interaction ("the user watched and rated
it"); ``--min-rating`` changes that. Metrics: Recall@K (truncated) and NDCG@K from
:mod:`zest.training.rec.metrics`, mean over test users, then mean ± sample std over seeds.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence

import torch

from ...models.rec.model import ZesRecConfig
from ...models.rec.text import TextEncoder
from .methods import run_baselines, run_zesrec
from .protocols import KS, VAL_METRIC, EvalData, cold_split, warm_split
from .report import fmt, summarize
from .trainer import TrainConfig

log = logging.getLogger(__name__)


def default_configs(quick: bool = False) -> tuple[ZesRecConfig, TrainConfig]:
    model_cfg = ZesRecConfig()
    train_cfg = TrainConfig(max_epochs=8 if quick else 20)
    return model_cfg, train_cfg


def evaluate(data: EvalData, encoder: TextEncoder, seeds: Sequence[int], protocols: Sequence[str] = ("cold", "warm"),
             model_cfg: ZesRecConfig | None = None, train_cfg: TrainConfig | None = None, lightfm: bool = True,
             cold_item_tags: str = "drop", progress: Callable[[str], None] = print) -> dict:
    if model_cfg is None or train_cfg is None:
        m, t = default_configs()
        model_cfg, train_cfg = model_cfg or m, train_cfg or t
    torch.set_num_threads(train_cfg.threads or 1)
    results: dict = {"dataset": data.name, "protocols": {}, "seeds": list(seeds),
                     "zesrec_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                     "cold_item_tags": cold_item_tags, "ks": list(KS), "val_metric": VAL_METRIC}
    t_all = time.perf_counter()
    for protocol in protocols:
        per_seed = []
        for seed in seeds:
            t0 = time.perf_counter()
            split = cold_split(data, encoder, seed, cold_item_tags=cold_item_tags) if protocol == "cold" else warm_split(data, encoder, seed)
            rows = {}
            zr, _ = run_zesrec(split, model_cfg, train_cfg)
            rows["ZESRec"] = zr
            progress(f"[{protocol} seed {seed}] ZESRec val {VAL_METRIC}={zr.val:.4f} test {fmt(zr.test)} ({zr.seconds:.0f}s, {zr.params})")
            for name, r in run_baselines(split, seed, lightfm=lightfm).items():
                rows[name] = r
                progress(f"[{protocol} seed {seed}] {name} val {VAL_METRIC}={r.val:.4f} test {fmt(r.test)} ({r.seconds:.0f}s, {r.params})")
            per_seed.append({"seed": seed, "split": split.info, "seconds": round(time.perf_counter() - t0, 1),
                             "methods": {k: {"test": v.test, "val_" + VAL_METRIC: v.val, "params": v.params,
                                             "seconds": round(v.seconds, 1)} for k, v in rows.items()}})
        results["protocols"][protocol] = {"per_seed": per_seed, "summary": summarize(per_seed)}
    results["seconds"] = round(time.perf_counter() - t_all, 1)
    results["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "machine": platform.machine()}
    return results
