"""`zest eval DIR` (service/cli.py hands it its arguments).

It prints a table for people (or `--json` for machines) on stdout; progress bars and notes go to stderr.
The BentoML model store is reached only through the callable service/cli.py passes in (`resolve_head`),
so this package stays importable without a store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from ...models.errors import InvalidInput, ModelLoadError, ZestError
from ...prompts import DEFAULT_SET
from .report import format_eval

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
    from ...models.heads import load_head

    if Path(ref).is_dir():
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
    p.add_argument("--head", default=None, help="evaluate an adapted head (name in the model store, or a "
                   "directory) instead of zero-shot; its training images are left out")
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


def main(argv: list[str] | None = None) -> int:  # python -m zest.training.vision.cli eval ...
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "eval":
        print("usage: python -m zest.training.vision.cli eval ...", file=sys.stderr)
        return 2
    try:
        return eval_main(argv[1:])
    except (ZestError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
