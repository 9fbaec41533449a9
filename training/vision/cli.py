"""`zest eval DIR` and `zest adapt DIR --name NAME` (service/cli.py hands them their arguments).

Both print a table for people (or `--json` for machines) on stdout; progress bars and notes go to stderr.
The BentoML model store is reached only through the callables service/cli.py passes in
(`resolve_head`, `save_to_store`), so this package stays importable without a store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ...models.errors import InvalidInput, ModelLoadError, ZestError
from ...prompts import DEFAULT_SET
from .adapt import DEFAULT_FOLDS, DEFAULT_METHOD, METHODS
from .report import format_eval, pct, table

DEFAULT_MODEL = "zest-tiny"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="image folder: one sub-folder per class, optional classes.yaml")
    p.add_argument("--model", default=None,
                   help=f"model spec, as ZEST_MODEL (default: $ZEST_MODEL or {DEFAULT_MODEL})")
    p.add_argument("--templates", default=DEFAULT_SET,
                   help=f"template set for the class names (default: {DEFAULT_SET})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--cache-dir", default=None, help="image-feature cache (default: ~/.cache/zest/features)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _encoder(args):
    from ...models.clip_encoder import ClipEncoder

    spec = args.model or os.environ.get("ZEST_MODEL", "").strip() or DEFAULT_MODEL
    return ClipEncoder.from_spec(spec, device=args.device, batch_size=args.batch_size)


def _cache(args, encoder):
    if args.no_cache:
        return None
    from .features import FeatureCache, default_cache_dir, model_fingerprint

    return FeatureCache(args.cache_dir or default_cache_dir(), encoder.model_id, model_fingerprint(encoder))


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_head(ref: str, resolve_head: Callable[[str], str] | None):
    from ...models.heads import is_head_path, load_head

    if is_head_path(ref):
        return load_head(ref)
    if resolve_head is None:
        raise InvalidInput(f"--head {ref!r} is not a head directory (and no model store is available here)")
    return load_head(resolve_head(ref), source=ref)


# ---------------------------------------------------------------------------------------------- eval

def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zest eval", description="Measure zero-shot classification (or an adapted head) on your labelled "
        "images: top-1/top-5, per-class precision/recall, a confusion-matrix PNG, a failure sheet, and which "
        "shipped template set is best on this data.")
    _common(p)
    p.add_argument("--head", default=None, help="evaluate an adapted head (its name in the model store, or a "
                   "head directory) instead of zero-shot; its training images are left out")
    p.add_argument("--url", default=None, help="evaluate a running zest server (POST /classify) instead of a "
                   "model in this process, e.g. http://127.0.0.1:3000")
    p.add_argument("--out", default="zest-eval", help="where report.json, confusion.png and failures.html go "
                   "(default: ./zest-eval)")
    p.add_argument("--failures", type=int, default=48, help="misclassified images on the failure sheet (default 48)")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison of the shipped template sets")
    return p


def eval_main(argv: list[str] | None = None, resolve_head: Callable[[str], str] | None = None) -> int:
    args = eval_parser().parse_args(argv)
    from .data import load_image_folder
    from .evaluate import evaluate_folder, evaluate_url, write_outputs

    folder = load_image_folder(args.dir)
    progress = False if args.no_progress else None
    if args.url:
        if args.model:
            raise InvalidInput("--model and --url exclude each other: the server runs its own model")
        report = evaluate_url(folder, args.url, templates=args.templates, head=args.head,
                              compare=not args.no_compare, progress=progress,
                              batch_size=min(args.batch_size, 16))
    else:
        head = _load_head(args.head, resolve_head) if args.head else None
        encoder = _encoder(args)
        report = evaluate_folder(folder, encoder, templates=args.templates, head=head, compare=not args.no_compare,
                                 cache=_cache(args, encoder), progress=progress, batch_size=args.batch_size)
    write_outputs(report, folder, args.out, n_failures=args.failures)
    if report.get("warning"):
        _note(f"note: {report['warning']}")
    print(json.dumps(report, indent=1) if args.json else format_eval(report))
    return 0


# ---------------------------------------------------------------------------------------------- adapt

def adapt_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zest adapt", description="Adapt the zero-shot classifier to a few labelled images per class, on "
        "cached image features, and report held-out zero-shot vs adapted accuracy. The head is saved to the "
        "BentoML model store as NAME (serve it with ZEST_HEADS=NAME).")
    _common(p)
    p.add_argument("--name", required=True, help="the head's name: its BentoML model name and the `head` of "
                   "POST /classify (lowercase letters, digits, '-', '_', '.')")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"adaptation method (default: {DEFAULT_METHOD}; see `zest adapt --compare`)")
    p.add_argument("--compare", action="store_true", help="also fit every other method and print their "
                   "held-out accuracy (the saved head is still --method's)")
    p.add_argument("--holdout", type=float, default=0.25,
                   help="fraction of each class's images held out of training and measured (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and the CV folds (default 0)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS,
                   help=f"cross-validation folds on the training part (default {DEFAULT_FOLDS})")
    p.add_argument("--no-refit", action="store_true", help="save the head fit on the training part only (default: "
                   "once the method and its settings are chosen, refit them on every labelled image)")
    p.add_argument("--out", default=None, help="also write the head to this directory")
    p.add_argument("--no-store", action="store_true", help="do not save to the BentoML model store (needs --out)")
    return p


def format_adapt(r: dict) -> str:
    h = r["heldout"]
    params = ", ".join(f"{k} {v:g}" for k, v in r["params"].items())
    cv = r["cv"]
    how = (f"{cv['chosen_by']}: {pct(cv['cv_top1'])} (zero-shot {pct(cv['cv_zero_shot_top1'])})"
           if cv.get("folds") else cv.get("chosen_by", ""))
    lines = [f"{r['dir']}: {r['n_classes']} classes, {r['n_images']} images"
             + (f" ({len(r['skipped'])} unreadable, skipped)" if r["skipped"] else ""),
             (f"  {r['n_train']} for training, {r['n_heldout']} held out ({r['holdout']:.0%} per class, seed "
             f"{r['seed']}); model {r['model']}, templates {r['templates']}"),
             f"  method {r['method']} ({params}), chosen by {how}",
             (f"  image features: {r['encoded_images']} encoded, {r['n_images'] - r['encoded_images']} from the "
             f"cache; fit {r['seconds']['fit']:.2f} s"),
             "", f"held-out images ({r['n_heldout']}), never used for training or selection:"]
    rows = [["zero-shot", pct(h["zero_shot"]["top1"]), pct(h["zero_shot"]["top5"])],
            [f"adapted ({r['method']})", pct(h["adapted"]["top1"]), pct(h["adapted"]["top5"])]]
    rows += [[f"  {m}", pct(v["top1"]), pct(v["top5"])] for m, v in r.get("compare", {}).items() if m != r["method"]]
    lines.append(table(rows, ["", "top-1", "top-5"]))
    refit = r.get("refit", {})
    lines += ["", f"saved head: {r['method']} with the settings above, refit on all {refit['images']} labelled images"
              + (f" (cache {refit['cache_size']})" if refit.get("cache_size") else "")
              + "; the held-out numbers above are those of the head fit on the training part" if refit.get("on_all_images")
              else f"saved head: the one fit on the {r['n_train']} training images (--no-refit)"]
    worst = sorted((c for c in h["per_class"] if c["support"]), key=lambda c: (c["adapted_recall"], c["class"]))[:5]
    if worst and worst[0]["adapted_recall"] < 1:
        lines += ["", "lowest held-out recall: " + ", ".join(
            f"{c['class']} {pct(c['adapted_recall'])} (zero-shot {pct(c['zero_shot_recall'])})" for c in worst
            if c["adapted_recall"] < 1)]
    for key, what in (("classes_without_images", "no readable images (zero-shot only)"),
                      ("classes_without_heldout", "one image, used for training, none held out")):
        if r[key]:
            lines.append(f"classes with {what}: {', '.join(r[key])}")
    if r["skipped"]:
        lines += ["", "unreadable, skipped:"] + [f"  {s['path']}: {s['reason']}" for s in r["skipped"]]
    for key, text in (("out", "head written to {}"), ("tag", "saved to the BentoML model store as {}")):
        if r.get(key):
            lines.append(text.format(r[key]))
    if r.get("tag"):
        lines += [f"serve it:  ZEST_HEADS={r['name']} zest serve     (pack it: ZEST_HEADS={r['name']} bentoml build)",
                  f"use it:    curl -F images=@photo.jpg -F head={r['name']} http://127.0.0.1:3000/classify"]
    return "\n".join(lines)


def adapt_main(argv: list[str] | None = None,
               save_to_store: Callable[[str, str, dict, dict], str] | None = None) -> int:
    args = adapt_parser().parse_args(argv)
    import tempfile

    from ...models.heads import check_name, save_head
    from .adapt import adapt_folder
    from .data import load_image_folder

    try:
        check_name(args.name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if args.no_store and not args.out:
        raise InvalidInput("--no-store needs --out DIR: the head has to be written somewhere")
    if not args.no_store and save_to_store is None:
        raise InvalidInput("no BentoML model store here: pass --out DIR --no-store")
    folder = load_image_folder(args.dir)
    encoder = _encoder(args)
    head, report = adapt_folder(folder, encoder, args.name, method=args.method, templates=args.templates,
                                holdout=args.holdout, seed=args.seed, folds=args.folds,
                                cache=_cache(args, encoder), progress=False if args.no_progress else None,
                                compare=args.compare, batch_size=args.batch_size, refit=not args.no_refit)
    if args.out:
        report["out"] = str(save_head(head, args.out))
    if not args.no_store:
        with tempfile.TemporaryDirectory() as tmp:
            directory = save_head(head, Path(tmp) / "head")
            m = head.meta["metrics"]
            report["tag"] = save_to_store(
                str(directory), head.name,
                {"model_id": head.model_id, "method": head.method, "classes": len(head.classes),
                 "heldout_images": m["heldout_images"], "zero_shot_top1": m["zero_shot_top1"],
                 "adapted_top1": m["adapted_top1"]},
                {"kind": "zest-head"})
    print(json.dumps(report, indent=1) if args.json else format_adapt(report))
    return 0


def main(argv: list[str] | None = None) -> int:  # python -m zest.training.vision.cli eval|adapt ...
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("eval", "adapt"):
        print("usage: python -m zest.training.vision.cli {eval,adapt} ...", file=sys.stderr)
        return 2
    try:
        return (eval_main if argv[0] == "eval" else adapt_main)(argv[1:])
    except (ZestError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
