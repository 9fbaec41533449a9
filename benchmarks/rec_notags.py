"""ZESRec trained without user tags (``zest rec train --no-tags``), measured on both benchmarks.

    python benchmarks/rec_notags.py cold --seed 3 --out X.json       # cold-item benchmark, tag-free text
    python benchmarks/rec_notags.py transfer --model DIR --out X.json  # zero-shot on ml-100k

Both rows use the library's benchmark code unchanged (``cold_split`` + ``run_zesrec`` + ``run_baselines``;
``transfer_split`` + ``model_scores``) and add one variant, ``u·v + w·b``: the content bias scaled by one
scalar ``w`` chosen on that benchmark's validation part (ml-100k's validation interactions for the transfer,
so that row is fitted on ml-100k, by one number).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from zest.models.rec.model import item_vectors, user_vectors
from zest.models.rec.text import TextEncoder
from zest.training.rec.data import load_movielens
from zest.training.rec.protocols import VAL_METRIC, Split, Task

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
REPORT = ("recall@20", "ndcg@20", "strict:recall@20", "strict:ndcg@20")


def weighted(match: np.ndarray, bias: np.ndarray, w: float) -> np.ndarray:
    return match + w * bias[None, :]


def choose_w(split: Split, parts_val: tuple[np.ndarray, np.ndarray], parts_test: tuple[np.ndarray, np.ndarray]) -> dict:
    """``w`` maximising validation NDCG@20 over :data:`WEIGHTS`; test metrics at that ``w`` and at every ``w``."""
    val = {w: split.val.mean(weighted(*parts_val, w))[VAL_METRIC] for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: val[w])
    curve = {str(w): {k: round(v, 5) for k, v in split.test_metrics(weighted(*parts_test, w)).items() if k in REPORT}
             for w in WEIGHTS}
    return {"w": best, "val_" + VAL_METRIC: val[best], "test": split.test_metrics(weighted(*parts_test, best)),
            "val_curve": {str(w): round(v, 5) for w, v in val.items()}, "test_curve": curve}


def cold(args: argparse.Namespace) -> dict:
    from dataclasses import replace

    import torch

    from zest.training.rec.evaluation import default_configs
    from zest.training.rec.methods import run_baselines, run_zesrec
    from zest.training.rec.protocols import cold_split, movielens_eval_data

    mc, tc = default_configs(False)
    tc = replace(tc, threads=1, progress=False)
    torch.set_num_threads(1)
    ml = load_movielens("data/ml-latest-small").without_tags()
    split = cold_split(movielens_eval_data(ml), TextEncoder(show_progress=False), args.seed, cold_item_tags="drop")
    t0 = time.perf_counter()
    zr, fr = run_zesrec(split, mc, tc)
    print(f"ZESRec no-tags seed {args.seed}: {zr.test} val={zr.val:.4f} {zr.params}", flush=True)
    net = fr.net

    def parts(task: Task) -> tuple[np.ndarray, np.ndarray]:
        hv, _ = item_vectors(net, split.input_emb)
        cv, cb = item_vectors(net, split.target_emb[task.candidates])
        return user_vectors(net, hv, task.histories) @ cv.T, cb

    var = choose_w(split, parts(split.val), parts(split.test))
    print(f"variant w={var['w']}: {var['test']}", flush=True)
    rows = {"ZESRec (no tags)": {"test": zr.test, "val_" + VAL_METRIC: zr.val, "params": zr.params},
            "ZESRec (no tags), u·v + w·b, w on validation": var}
    for name, r in run_baselines(split, args.seed, lightfm=False).items():
        rows[name + " (no tags)"] = {"test": r.test, "val_" + VAL_METRIC: r.val, "params": r.params}
    return {"benchmark": "cold", "seed": args.seed, "split": split.info, "methods": rows,
            "seconds": round(time.perf_counter() - t0, 1)}


def transfer(args: argparse.Namespace) -> dict:
    from zest.models.rec.zesrec import load
    from zest.training.rec.ml100k import load_ml100k
    from zest.training.rec.transfer import bootstrap_std, model_scores, transfer_split

    enc = TextEncoder(show_progress=False)
    model = load(args.model, encoder=enc)
    source = load_movielens("data/ml-latest-small")
    split = transfer_split(load_ml100k(None), source.titles, enc, args.seed)
    rows: dict = {}
    for part, name in (("full", ""), ("bias", ": content bias only"), ("match", ": u·v only (no bias)")):
        s = model_scores(model, split.input_emb, split.test, part)
        rows[f"{args.label}, zero-shot" + name] = {"test": split.test_metrics(s),
                                                                       "bootstrap_std": bootstrap_std(split, s)}

    def parts(task: Task) -> tuple[np.ndarray, np.ndarray]:
        return model_scores(model, split.input_emb, task, "match"), model_scores(model, split.input_emb, task, "bias")[0]

    pv, pt = parts(split.val), parts(split.test)
    var = choose_w(split, pv, pt)
    var["bootstrap_std"] = bootstrap_std(split, weighted(*pt, var["w"]))
    rows[f"{args.label}, u·v + w·b, w on ml-100k validation"] = var
    return {"benchmark": "transfer", "seed": args.seed, "model": args.model, "split": split.info,
            "transferred_model": model.meta.get("report"), "methods": rows}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["cold", "transfer"])
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--model", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--label", default="ZESRec no-tags (ml-latest-small)", help="transfer: row-name prefix")
    args = p.parse_args()
    os.chdir(ROOT)
    res = cold(args) if args.what == "cold" else transfer(args)
    res["command"] = "python3 benchmarks/rec_notags.py " + " ".join(sys.argv[1:])
    Path(args.out).write_text(json.dumps(res, indent=2))
    for name, r in res["methods"].items():
        print(name, {k: round(v, 4) for k, v in r["test"].items() if k in REPORT}, r.get("w", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
