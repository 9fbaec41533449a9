"""The ZESRec benchmark (``zest rec eval``): runs every method on every seed of each protocol.

Modules by job: :mod:`.protocols` (data views; the cold-item and warm-item protocols: `cold_split`,
`warm_split`), :mod:`.methods` (ZESRec and the baselines on one split), :mod:`.report` (summaries, Markdown),
this module (the driver). Every MovieLens rating is one implicit interaction (``--min-rating`` changes that).
Metrics: Recall@K (truncated) and NDCG@K (:mod:`zest.training.rec.metrics`), mean over test users, then
mean ± sample std over seeds.
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
