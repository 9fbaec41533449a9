"""``zest rec train`` and ``zest rec eval`` as ``train_main(argv)`` / ``eval_main(argv)`` (return exit codes).

``train_main``: early stopping on a held-out 10 % of the *items* (ranked as if they were new, like the
cold-item use case), then, unless ``--no-refit``, a re-fit on all interactions for the chosen number of
epochs; the model (+ the catalogue's item vectors) is written with :func:`zest.models.rec.zesrec.save`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...models.errors import InvalidInput, ZestError
from ...models.rec.model import ZesRecConfig, item_vectors, user_vectors
from ...models.rec.text import TextEncoder
from ...models.rec.zesrec import ZesRec, save
from .data import (
    Interactions,
    ItemTexts,
    load_interactions_csv,
    load_items_csv,
    load_movielens,
)
from .trainer import FitResult, TrainConfig, fit

log = logging.getLogger(__name__)

DEFAULT_CACHE = os.environ.get("ZEST_REC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "zest", "rec"))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="text-embedding cache ('' = none) [%(default)s]")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads [%(default)s]")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("-v", "--verbose", action="store_true")


def _configs(args) -> tuple[ZesRecConfig, TrainConfig]:
    from .evaluation import default_configs

    mc, tc = default_configs(getattr(args, "quick", False))
    tc = replace(tc, threads=args.threads, progress=not args.no_progress)
    if args.max_epochs is not None:
        tc = replace(tc, max_epochs=args.max_epochs)
    if args.patience is not None:
        tc = replace(tc, patience=args.patience)
    return mc, tc


def _encoder(args) -> TextEncoder:
    return TextEncoder(cache_dir=args.cache_dir or None, show_progress=not args.no_progress)


# ------------------------------------------------------------------------------------------------- train


def train_zesrec(catalog: ItemTexts, interactions: Interactions, seed: int = 0, encoder: TextEncoder | None = None,
                 model_cfg: ZesRecConfig | None = None, train_cfg: TrainConfig | None = None, val_frac: float = 0.1,
                 refit: bool = True) -> tuple[ZesRec, dict]:
    """Train on a catalogue + interactions; returns the model (with the catalogue's item vectors) and a report."""
    from .protocols import VAL_METRIC, Task, make_task, user_targets

    t0 = time.perf_counter()
    encoder = encoder if encoder is not None else TextEncoder()  # an empty one is falsy (__len__)
    mc = model_cfg or ZesRecConfig()
    tc = replace(train_cfg or TrainConfig(), seed=seed)
    torch.set_num_threads(tc.threads or 1)
    emb = encoder.encode(catalog.texts)
    n = len(catalog)
    seqs_all = interactions.sequences()
    if not any(len(s) >= 2 for s in seqs_all.values()):
        raise InvalidInput("every user has fewer than two interactions; nothing to learn a sequence from")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = round(val_frac * n) if n >= 20 else 0
    val_items = np.sort(perm[:n_val])
    role = np.zeros(n, bool)
    role[val_items] = True
    is_val = role[interactions.item]
    train = interactions.subset(~is_val)
    train_seqs = list(train.sequences().values())
    catalogue = np.sort(perm[n_val:])
    val_task: Task | None = None
    if n_val:
        try:
            val_task = make_task(train.sequences(), user_targets(interactions.subset(is_val)), val_items, n, False)
        except InvalidInput:
            val_task = None

    def val_fn(net) -> float:
        assert val_task is not None  # passed to the trainer only when there is a validation task
        hv, _ = item_vectors(net, emb)
        cv, cb = item_vectors(net, emb[val_task.candidates])
        s = user_vectors(net, hv, val_task.histories) @ cv.T + cb[None, :]
        return val_task.mean(s)[VAL_METRIC]

    report: dict = {"items": n, "interactions": len(interactions), "users": interactions.n_users, "seed": seed}
    if val_task is not None and any(len(s) >= 2 for s in train_seqs):
        fr: FitResult = fit(emb, emb, train_seqs, catalogue, mc, tc, val_fn)
        report.update(val_items=int(n_val), val_users=len(val_task.users), best_epoch=fr.best_epoch,
                      **{"val_" + VAL_METRIC: round(fr.best_val, 5)}, early_stopping_seconds=round(fr.seconds, 1))
        epochs = fr.best_epoch
        if refit:
            fr = fit(emb, emb, list(seqs_all.values()), np.arange(n), mc, tc, None, epochs=epochs)
            report["refit_seconds"] = round(fr.seconds, 1)
    else:
        log.warning("too little data for a validation split; training %d epochs without early stopping", tc.max_epochs)
        fr = fit(emb, emb, list(seqs_all.values()), np.arange(n), mc, tc, None)
        report["best_epoch"] = fr.best_epoch
    net = fr.net.eval()
    model = ZesRec(net, encoder=encoder, meta={"train": {**tc.to_dict(), "refit": refit}, "report": report})
    model.catalog_ids = list(catalog.ids)
    model.catalog_texts = list(catalog.texts)
    model.catalog_vectors = model.embed_text_embeddings(emb)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    model.meta["report"] = report
    return model, report


def train_main(argv: Sequence[str] | None = None) -> int:
    """``zest rec train --items ITEMS --interactions INTERACTIONS [--out DIR] [--seed N]``"""
    p = argparse.ArgumentParser(prog="zest rec train", description="Train a ZESRec model (text-only item tower + sequence user model).")
    p.add_argument("--items", help="items.csv: id + text column(s)")
    p.add_argument("--interactions", help="interactions.csv: user,item,timestamp[,rating]")
    p.add_argument("--movielens", help="instead of --items/--interactions: an ml-latest-small directory")
    p.add_argument("--out", default="zesrec_model", help="output model directory [%(default)s]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-rating", type=float, default=None, help="keep interactions with rating >= this")
    p.add_argument("--text-cols", default=None, help="comma-separated item text columns (default: text or all)")
    p.add_argument("--no-refit", action="store_true", help="keep the early-stopped model (trained on 90%% of items)")
    p.add_argument("--no-tags", action="store_true", help="--movielens: describe items without user tags")
    p.add_argument("--no-catalog", action="store_true",
                   help="write only config.json + model.safetensors (no training catalogue; as models/rec/checkpoint/)")
    _common(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.movielens:
            ml = load_movielens(args.movielens, min_rating=args.min_rating)
            ml = ml.without_tags() if args.no_tags else ml
            catalog, inter = ml.catalog, ml.interactions
        else:
            if not args.items or not args.interactions:
                p.error("give --items and --interactions (or --movielens DIR)")
            catalog = load_items_csv(args.items, text_cols=args.text_cols.split(",") if args.text_cols else None)
            inter = load_interactions_csv(args.interactions, catalog, min_rating=args.min_rating)
        mc, tc = _configs(args)
        model, report = train_zesrec(catalog, inter, args.seed, _encoder(args), mc, tc, refit=not args.no_refit)
        save(model, args.out, save_catalog=not args.no_catalog)
    except ZestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(Path(args.out).resolve()), **report}, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------- eval


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``zest rec eval [--movielens DIR | --items I --interactions X] [--seeds 0 1 2] [--quick]``"""
    from .evaluation import evaluate
    from .protocols import generic_eval_data, movielens_eval_data
    from .report import to_markdown, zesrec_beats_all

    p = argparse.ArgumentParser(prog="zest rec eval", description="Cold-item (and warm-item) benchmark of ZESRec vs baselines.")
    p.add_argument("--movielens", default=None, help="ml-latest-small directory [data/ml-latest-small]")
    p.add_argument("--items")
    p.add_argument("--interactions")
    p.add_argument("--min-rating", type=float, default=None, help="implicit = rating >= this (default: every rating)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="[3 4 5] (quick: [3]); seeds 0-2 and 100-102 were used while developing the model")
    p.add_argument("--protocols", nargs="+", choices=["cold", "warm"], default=None, help="[cold warm] (quick: cold)")
    p.add_argument("--cold-item-tags", choices=["drop", "keep"], default="drop",
                   help="describe cold items without user tags (honest, default) or with them (leaky)")
    p.add_argument("--no-lightfm", action="store_true")
    p.add_argument("--no-tags", action="store_true", help="describe every item without user tags (train and test)")
    p.add_argument("--quick", action="store_true", help="one seed, cold protocol, fewer epochs")
    p.add_argument("--out-md", default=None, help="[benchmarks/results/rec_eval.md] (quick: rec_eval_quick.md)")
    p.add_argument("--out-json", default=None)
    p.add_argument("--transfer", action="store_true",
                   help="zero-shot transfer: the --model (trained on --movielens) ranks MovieLens ml-100k, not trained on it")
    p.add_argument("--model", default=None, help="with --transfer: ZESRec model directory [the shipped checkpoint]")
    p.add_argument("--data-cache", default=None, help="with --transfer: where recbole's wheel (ml-100k) is kept")
    p.add_argument("--users", type=int, default=None, help="with --transfer: only the first N ml-100k users")
    p.add_argument("--no-in-domain", action="store_true", help="with --transfer: skip ZESRec trained on ml-100k")
    _common(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.transfer:
        from .transfer import transfer_main

        mc, tc = _configs(args)
        return transfer_main(args, list(argv) if argv is not None else sys.argv[1:], _encoder(args), mc, tc)
    seeds = args.seeds or ([3] if args.quick else [3, 4, 5])
    protocols = args.protocols or (["cold"] if args.quick else ["cold", "warm"])
    stem = "rec_eval_quick" if args.quick else "rec_eval"
    out_md = Path(args.out_md or f"benchmarks/results/{stem}.md")
    out_json = Path(args.out_json or out_md.with_suffix(".json"))
    try:
        if args.items or args.interactions:
            if not (args.items and args.interactions):
                p.error("give both --items and --interactions")
            catalog = load_items_csv(args.items)
            data = generic_eval_data(catalog, load_interactions_csv(args.interactions, catalog, min_rating=args.min_rating),
                                     name=Path(args.items).parent.name or "custom")
        else:
            ml = load_movielens(args.movielens or "data/ml-latest-small", min_rating=args.min_rating)
            data = movielens_eval_data(ml.without_tags() if args.no_tags else ml)
        mc, tc = _configs(args)
        results = evaluate(data, _encoder(args), seeds, protocols, mc, tc, lightfm=not args.no_lightfm,
                           cold_item_tags=args.cold_item_tags)
    except ZestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["min_rating"] = args.min_rating
    command = "zest rec eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results["command"] = command
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(to_markdown(results, command))
    out_json.write_text(json.dumps(results, indent=2))
    print(to_markdown(results, command))
    for protocol, res in results["protocols"].items():
        print(f"{protocol}: ZESRec beats every baseline: {zesrec_beats_all(res['summary'])}")
    return 0
