"""Zero-shot transfer benchmark (``zest rec eval --transfer``): a ZESRec model trained on one catalogue (the
shipped one: ml-latest-small) ranks MovieLens ml-100k's items for ml-100k's users, with no training on ml-100k.

Split: ml-100k under the warm protocol (:func:`.protocols.warm_split`): each user's last 5 interactions are
test, the 5 before validation (used only by the methods that train on ml-100k), the rest train; at test the
history is every earlier interaction and the candidates are every ml-100k item not in it. The ``strict`` view
ranks only the items whose title occurs nowhere in the source catalogue (:func:`.ml100k.unseen_titles`), for
the users with such an item among their test items. Rows: the transferred model as is, its content bias
alone and its user-item term alone (no ml-100k data at all), then, fitted on ml-100k's training part, the
benchmark's baselines (:func:`.methods.run_baselines`) and ZESRec trained on ml-100k (the in-domain ceiling).
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...models.cpu_features import cpu_model_and_flags
from ...models.errors import InvalidInput
from ...models.rec.model import ZesRecConfig
from ...models.rec.text import TextEncoder
from ...models.rec.zesrec import ZesRec
from .data import MovieLens
from .methods import MethodResult, run_baselines, run_zesrec
from .ml100k import _YEAR, GENRES, unseen_titles
from .protocols import KS, VAL_METRIC, Split, Task, movielens_eval_data, warm_split
from .trainer import TrainConfig

log = logging.getLogger(__name__)

SHIPPED = "ZESRec shipped (ml-latest-small), zero-shot"
REPORTED = ("recall@20", "ndcg@20", "strict:recall@20", "strict:ndcg@20")


def generic_csv_texts(ml: MovieLens) -> list[str]:
    """ml-100k's texts as a plain items CSV of recbole's columns would give them (:func:`.data.load_items_csv`:
    ``"Toy Story. release_year: 1995. class: Animation Children's Comedy"``): the text-format ablation."""
    raw = {v: k for k, v in GENRES.items() if v}
    out = []
    for title, genres, year in zip(ml.titles, ml.genres, ml.years):
        parts = [_YEAR.sub("", title)]
        if year:
            parts.append(f"release_year: {year}")
        parts.append("class: " + (" ".join(raw.get(g, g) for g in genres) or "unknown"))
        out.append(". ".join(parts))
    return out


def model_scores(model: ZesRec, text_emb: np.ndarray, task: Task, part: str = "full") -> np.ndarray:
    """(users, candidates) scores of a trained model on a task over items with text embeddings ``text_emb``:
    ``full`` = u . v + b, ``bias`` = b alone (a popularity prior from text), ``match`` = u . v alone."""
    rows = model.embed_text_embeddings(text_emb)
    cand = rows[task.candidates]
    if part == "bias":
        return np.tile(cand[:, -1], (len(task.users), 1))
    users = model.user_vectors([rows[np.asarray(h)] for h in task.histories])
    if part == "match":
        return users[:, :-1] @ cand[:, :-1].T
    return users @ cand.T


def bootstrap_std(split: Split, scores: np.ndarray, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Std of each reported mean over ``n`` resamples of the test users (the spread a deterministic row has)."""
    rng = np.random.default_rng(seed)
    per_user = {k: v for k, v in split.test.metrics(scores).items()}
    for name, view in split.views.items():
        sub = np.asarray(scores)[np.ix_(view.rows, view.cols)]
        per_user.update({f"{name}:{k}": v for k, v in view.task.metrics(sub).items()})
    out = {}
    for k in (k for k in REPORTED if k in per_user):
        v = per_user[k]
        idx = rng.integers(0, len(v), size=(n, len(v)))
        out[k] = float(v[idx].mean(axis=1).std(ddof=1))
    return out


def zero_shot_rows(model: ZesRec, split: Split, texts_emb: dict[str, np.ndarray]) -> dict[str, tuple[MethodResult, dict]]:
    """The transferred model's rows (no ml-100k data used): per text variant, full score; bias / match alone."""
    out = {}
    for variant, emb in texts_emb.items():
        parts = ("full", "bias", "match") if variant == "zest" else ("full",)
        for part in parts:
            t0 = time.perf_counter()
            s = model_scores(model, emb, split.test, part)
            name = SHIPPED + {"full": "", "bias": ": content bias only", "match": ": u·v only (no bias)"}[part]
            if variant != "zest":
                name += f", {variant} item text"
            out[name] = (MethodResult(split.test_metrics(s), float("nan"), {"trained_on_target": False},
                                      time.perf_counter() - t0), bootstrap_std(split, s))
    return out


def _fmt(m: dict[str, float]) -> str:
    return " ".join(f"{k}={m[k]:.4f}" for k in REPORTED if k in m)


def summarize(per_seed: list[dict]) -> dict:
    out: dict = {}
    for name in per_seed[0]["methods"]:
        out[name] = {}
        for k in per_seed[0]["methods"][name]["test"]:
            vals = np.array([s["methods"][name]["test"][k] for s in per_seed])
            out[name][k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def git_commit(root: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, check=True,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def transfer_split(target: MovieLens, source_titles: Sequence[str], encoder: TextEncoder, seed: int,
                   users: int | None = None) -> Split:
    """The warm split of ``target`` with the ``strict`` view; ``users`` keeps only the first that many users."""
    if users is not None:
        keep = target.interactions.user < users
        target = replace(target, interactions=replace(target.interactions.subset(keep),
                                                      user_ids=target.interactions.user_ids[:users]))
    split = warm_split(movielens_eval_data(target), encoder, seed)
    unseen = unseen_titles(target.titles, list(source_titles))
    try:
        split.views["strict"] = split.test.restrict(unseen)
    except InvalidInput:  # a small subset may have no test item with an unseen title
        log.warning("no test user has an item with a title unseen in the source; no strict view")
    strict = split.views["strict"].task if "strict" in split.views else None
    split.info["strict"] = {"items": int(unseen.sum()), "candidates": len(strict.candidates) if strict else 0,
                            "users": len(strict.users) if strict else 0,
                            "relevant": sum(len(r) for r in strict.relevant) if strict else 0}
    return split


def evaluate_transfer(model: ZesRec, source_titles: Sequence[str], target: MovieLens, encoder: TextEncoder,
                      seeds: Sequence[int], model_cfg: ZesRecConfig, train_cfg: TrainConfig, lightfm: bool = True,
                      in_domain: bool = True, users: int | None = None,
                      progress: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(train_cfg.threads or 1)
    t_all = time.perf_counter()
    base = transfer_split(target, source_titles, encoder, seeds[0], users)
    texts_emb = {"zest": base.input_emb, "generic CSV": encoder.encode(generic_csv_texts(target))}
    zero = zero_shot_rows(model, base, texts_emb)
    for name, (r, _) in zero.items():
        progress(f"[transfer] {name}: " + _fmt(r.test))
    per_seed = []
    for seed in seeds:
        t0 = time.perf_counter()
        split = replace(base, seed=seed)
        rows = {name: r for name, (r, _) in zero.items()}
        for name, r in run_baselines(split, seed, lightfm=lightfm).items():
            rows[name] = r
            progress(f"[transfer seed {seed}] {name}: " + _fmt(r.test))
        if in_domain:
            zr, _ = run_zesrec(split, model_cfg, train_cfg)
            rows["ZESRec trained on ml-100k (in-domain)"] = zr
            progress(f"[transfer seed {seed}] ZESRec in-domain: " + _fmt(zr.test))
        per_seed.append({"seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                         "methods": {k: {"test": v.test, "val_" + VAL_METRIC: v.val, "params": v.params,
                                         "seconds": round(v.seconds, 1)} for k, v in rows.items()}})
    return {
        "dataset": "ml-100k (recbole 1.2.1 wheel)", "source": "ml-latest-small", "seeds": list(seeds), "ks": list(KS),
        "split": base.info, "per_seed": per_seed, "summary": summarize(per_seed),
        "user_bootstrap_std": {name: b for name, (_, b) in zero.items()},
        "zesrec_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
        "transferred_model": {k: model.meta.get(k) for k in ("report", "train")},
        "seconds": round(time.perf_counter() - t_all, 1),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "machine": platform.machine(),
                        "processor": platform.processor() or None, "cpu_model": cpu_model_and_flags()[0], "cpus": _cpus()},
    }


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def to_markdown(res: dict, command: str = "") -> str:
    s, boot = res["summary"], res["user_bootstrap_std"]
    info = res["split"]
    lines = ["# Zero-shot transfer: ZESRec trained on ml-latest-small, ranking ml-100k", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        (f"Seeds {res['seeds']}: mean ± sample std over the seeds for the rows that depend on the seed (column "
        "`runs`: how many seeds); rows that do not (`runs` = det.: every seed gives the same numbers) show the value "
        "alone, or, for the transferred model, ± [b] = the std of the mean over 1000 bootstrap resamples of the test "
        "users. "
        "ml-100k split: each user's last 5 interactions are test, the 5 before validation (for the methods fitted on "
        "ml-100k), the rest train; candidates = every ml-100k item not in the user's history. "
        f"Strict zero-shot = candidates and relevant items restricted to the {info['strict']['items']} ml-100k items "
        "whose title occurs nowhere in ml-latest-small "
        f"({info['strict']['users']} users with such a test item, {info['strict']['relevant']} relevant items)."),
        "",
        f"Split: {info}",
        "",
        "| method | fitted on ml-100k | runs | Recall@20 | NDCG@20 | strict Recall@20 | strict NDCG@20 |",
        "|---|---|---|---|---|---|---|",
    ]
    n_seeds = len(res["per_seed"])
    for name, row in s.items():
        fitted = "no" if name.startswith(SHIPPED) or name == "random" else "yes"
        det = name in boot or (n_seeds > 1 and all(row[k]["std"] < 1e-12 for k in row))
        cells = []
        for k in REPORTED:
            if k not in row:
                cells.append("-")
            elif name in boot:
                cells.append(f"{row[k]['mean']:.4f} ± {boot[name][k]:.4f} [b]")
            elif det or n_seeds == 1:
                cells.append(f"{row[k]['mean']:.4f}")
            else:
                cells.append(f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}")
        runs = "det." if det else str(n_seeds)
        lines.append(f"| {name} | {fitted} | {runs} | " + " | ".join(cells) + " |")
    params = {name: [p["methods"][name]["params"] for p in res["per_seed"]] for name in s}
    lines += ["", "Validation-chosen settings per seed (fitted rows):", ""]
    for name, p in params.items():
        if any(x and x != {"trained_on_target": False} for x in p):
            lines.append(f"- {name}: {p}")
    env = res["environment"]
    lines += ["", (f"Total wall time {res['seconds']:.0f}s on {env['machine']} {env.get('cpu_model') or ''} "
              f"({env['cpus']} CPUs, shared), torch "
              f"{env['torch']}, {env['threads']} thread(s); commit {res.get('commit')}."), ""]
    return "\n".join(lines)


def transfer_main(args, argv: list[str], encoder: TextEncoder, model_cfg: ZesRecConfig, train_cfg: TrainConfig) -> int:
    """``zest rec eval --transfer`` (``args`` as parsed there, configs for the in-domain ZESRec): run
    :func:`evaluate_transfer`, write benchmarks/results/rec_transfer.{md,json}."""
    import json
    import shlex
    import sys

    from ...models.errors import ZestError
    from ...models.rec.zesrec import load
    from .data import load_movielens
    from .ml100k import load_ml100k

    seeds = args.seeds or ([3] if args.quick else [3, 4, 5])
    stem = "rec_transfer_quick" if args.quick or args.users else "rec_transfer"
    out_md = Path(args.out_md or f"benchmarks/results/{stem}.md")
    out_json = Path(args.out_json or out_md.with_suffix(".json"))
    try:
        model_dir = args.model or str(Path(__file__).resolve().parents[2] / "models" / "rec" / "checkpoint")
        model = load(model_dir, encoder=encoder)
        source = load_movielens(args.movielens or "data/ml-latest-small")
        target = load_ml100k(args.data_cache)
        res = evaluate_transfer(model, source.titles, target, encoder, seeds, model_cfg, train_cfg, lightfm=not args.no_lightfm,
                                in_domain=not args.no_in_domain, users=args.users)
    except ZestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "zest rec eval " + " ".join(shlex.quote(a) for a in argv)
    res.update(command=command, model=str(model_dir), commit=git_commit(Path(__file__).resolve().parents[2]))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(to_markdown(res, command))
    out_json.write_text(json.dumps(res, indent=2))
    print(to_markdown(res, command))
    return 0
