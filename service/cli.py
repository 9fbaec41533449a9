"""The `zest` command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..models.errors import ZestError
from .settings import Settings


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths).rstrip())
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_templates(args: argparse.Namespace) -> int:
    from ..prompts import list_template_sets

    _print_table([[s.name, str(len(s.templates)), s.description] for s in list_template_sets()],
                 ["name", "templates", "description"])
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    import asyncio

    from ..models.classifier import ZeroShotClassifier, clean_labels
    from ..models.clip_encoder import ClipEncoder
    from ..models.images import decode_image
    from ..prompts import load_template_set

    settings = Settings.from_env()
    labels = clean_labels([s for s in args.labels.split(",")], settings.max_labels, settings.max_label_chars)
    templates = load_template_set(args.templates)
    images = [decode_image(Path(p).read_bytes(), max_bytes=settings.max_image_bytes,
                           max_pixels=settings.max_image_pixels, name=p) for p in args.images]
    encoder = ClipEncoder.from_spec(args.model or settings.model, device=args.device or settings.device,
                                    precision=settings.precision, batch_size=settings.batch_size,
                                    runtime=settings.runtime, cache_dir=settings.runtime_cache_dir)
    classifier = ZeroShotClassifier.from_encoder(encoder)
    predictions = asyncio.run(classifier.predict(encoder.encode_images(images), labels, templates, k=args.top_k))
    rows = [[path, str(rank + 1), label, f"{prob:.4f}"]
            for path, preds in zip(args.images, predictions) for rank, (label, prob) in enumerate(preds)]
    print(f"model: {encoder.model_id}   templates: {templates.name} ({len(templates.templates)})")
    _print_table(rows, ["image", "rank", "label", "probability"])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`bentoml serve` on loopback by default (pass --host 0.0.0.0 to expose it deliberately).

    The environment is passed on as it is: a hub spec downloads when the machine has network, and
    zest-tiny and the recommender's MiniLM read local files whatever HF_HUB_OFFLINE says.

    A model service that cannot load its model stops the server and writes why to the file named in
    ZEST_FATAL_FILE (service/lifecycle.py); then this prints that error and exits 1, instead of BentoML
    restarting the worker for ever. SIGTERM and SIGHUP are passed on to the server; SIGINT (Ctrl-C) reaches
    it from the terminal directly."""
    import os
    import signal
    import tempfile

    import zest

    from .lifecycle import FATAL_FILE_ENV

    # BentoML imports the service by name from its working directory: the one that holds the `zest`
    # package (a checkout's root, or site-packages), never the user's current directory.
    home = Path(zest.__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bentoml", "serve", "zest.service.app:Zest", "--working-dir", str(home),
           "--host", args.host, "--port", str(args.port)]
    with tempfile.TemporaryDirectory(prefix="zest-serve-") as tmp:
        fatal = Path(tmp) / "start-failure"
        proc = subprocess.Popen(cmd, env={**os.environ, FATAL_FILE_ENV: str(fatal)})
        forwarded = {sig: signal.signal(sig, lambda s, _: proc.send_signal(s)) for sig in (signal.SIGTERM, signal.SIGHUP)}
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            code = proc.wait()
        finally:
            for sig, handler in forwarded.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGINT, previous_int)
        failures = fatal.read_text().strip() if fatal.is_file() else ""
    if failures:
        for line in failures.splitlines():
            print(f"zest: error: {line}", file=sys.stderr)
        return code if code > 0 else 1
    return code


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def cmd_index(args: argparse.Namespace) -> int:
    """`zest index DIR --collection NAME`: upload every image under DIR to a running server's collection.

    Ids are the paths relative to DIR; metadata {"path": ...}. The collection is created if it does not
    exist. Images go in requests of --batch files (the server's ZEST_MAX_IMAGES at most); a failed batch
    is reported and skipped (it stores nothing), the others go on."""
    import json

    import httpx
    from tqdm import tqdm

    root = Path(args.dir)
    if not root.is_dir():
        print(f"zest: error: {root} is not a directory", file=sys.stderr)
        return 2
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"zest: error: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}", file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    failed = 0
    with httpx.Client(timeout=args.timeout) as client:
        r = client.get(f"{url}/collections/{args.collection}")
        if r.status_code == 404:
            r = client.post(f"{url}/collections", json={"name": args.collection})
        if r.status_code != 200:
            print(f"zest: error: {r.status_code} {r.text[:300]}", file=sys.stderr)
            return 2
        with tqdm(total=len(files), unit="img", desc=args.collection, disable=args.quiet) as bar:
            for a in range(0, len(files), args.batch):
                batch = files[a:a + args.batch]
                ids = [p.relative_to(root).as_posix() for p in batch]
                upload = [("images", (p.name, p.read_bytes(), "application/octet-stream")) for p in batch]
                data = {"ids": json.dumps(ids), "metadata": json.dumps([{"path": i} for i in ids])}
                r = client.post(f"{url}/collections/{args.collection}/items", files=upload, data=data)
                if r.status_code != 200:
                    failed += len(batch)
                    tqdm.write(f"batch {ids[0]} .. {ids[-1]}: {r.status_code} {r.text[:200]}", file=sys.stderr)
                bar.update(len(batch))
        count = client.get(f"{url}/collections/{args.collection}").json().get("count")
    print(f"indexed {len(files) - failed} of {len(files)} images into {args.collection!r} ({count} items)")
    return 1 if failed else 0


def cmd_train_embedded(args: argparse.Namespace) -> int:
    from ..training.embedded.train import main as train_main

    return train_main(args.rest)


def cmd_eval_embedded(args: argparse.Namespace) -> int:
    from ..training.embedded.evaluate import main as eval_main

    return eval_main(args.rest)


def cmd_eval(args: argparse.Namespace) -> int:
    """`zest eval DIR ...`: metrics, confusion PNG and failure sheet on a labelled folder (training/vision)."""
    from ..training.vision.cli import eval_main
    from .bento_models import store_path

    return eval_main(args.rest, resolve_head=store_path)


def cmd_adapt(args: argparse.Namespace) -> int:
    """`zest adapt DIR --name NAME ...`: a few-shot head, saved to the BentoML model store (training/vision)."""
    from ..training.vision.cli import adapt_main
    from .bento_models import save_to_store

    return adapt_main(args.rest, save_to_store=save_to_store)


def cmd_rec(args: argparse.Namespace) -> int:
    """`zest rec train|eval ...`: the recommender's own CLI (training/rec/cli.py); train also stores the model."""
    import tempfile

    from ..training.rec import cli as rec_cli

    rest = list(args.rest)
    if args.action == "eval":
        return rec_cli.eval_main(rest)
    if any(a in ("-h", "--help") for a in rest):
        return rec_cli.train_main(rest)
    with tempfile.TemporaryDirectory() as tmp:
        if "--out" not in rest:
            rest += ["--out", str(Path(tmp) / "zesrec")]
        code = rec_cli.train_main(rest)
        if code != 0 or args.no_store:
            return code
        from .bento_models import save_to_store

        out = rest[rest.index("--out") + 1]
        tag = save_to_store(out, args.store_name, metadata={"trained_with": " ".join(args.rest)})
    print(f"saved to the BentoML model store as {tag}\nserve it:  ZEST_REC_MODEL={tag} zest serve"
          f"\npack it:   ZEST_REC_MODEL={tag} bentoml build")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    """`zest models import SPEC [--name NAME]`: a CLIP model's config and weights into the BentoML model store."""
    from .bento_models import import_clip

    print(f"loading {args.spec} ...", file=sys.stderr)
    tag = import_clip(args.spec, args.name)
    print(f"saved {args.spec} to the BentoML model store as {tag}\nserve it:  ZEST_MODEL={tag} zest serve"
          f"\npack it:   ZEST_MODEL={tag} bentoml build   (the bento then starts with no network)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zest", description="Multimodal zero-shot inference.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="zero-shot classify images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", required=True, help='comma-separated class names, e.g. "cat,dog,car"')
    p.add_argument("--templates", default="imagenet-simple", help="template set name (see `zest templates`)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--model", default=None, help="model spec (default: $ZEST_MODEL or zest-tiny)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("templates", help="list the shipped prompt template sets")
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("rec", help="recommender: train (and store) or evaluate a ZESRec model",
                       description="zest rec train --items ITEMS --interactions INTERACTIONS [--out DIR] | "
                                   "zest rec eval [--quick]; `zest rec train -h` lists every option")
    p.add_argument("action", choices=["train", "eval"])
    p.add_argument("--store-name", default="zesrec", help="BentoML model name for the trained model")
    p.add_argument("--no-store", action="store_true", help="do not save the trained model to the BentoML store")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of the train/eval command")
    p.set_defaults(func=cmd_rec)

    p = sub.add_parser("models", help="BentoML model store: `zest models import SPEC` stores a CLIP model for packing")
    models = p.add_subparsers(dest="models_command", required=True)
    p = models.add_parser("import", help="load a CLIP model spec; store its config and weights as a BentoML model",
                          description="Load SPEC (any model spec: ARCH/TAG, hf-hub:ORG/NAME, a local checkpoint, ...) "
                                      "and store it in the BentoML model store as a local open_clip checkpoint. "
                                      "ZEST_MODEL=NAME:VERSION then serves it, and `bentoml build` packs it.")
    p.add_argument("spec", help="model spec, e.g. ViT-B-32/laion2b_s34b_b79k")
    p.add_argument("--name", default=None, help="BentoML model name (default: derived from the spec)")
    p.set_defaults(func=cmd_models_import)

    # listed for --help; main() hands their arguments straight to their own parsers
    sub.add_parser("train-embedded", help="train the embedded zest-tiny model (`zest train-embedded -h`)")
    sub.add_parser("eval-embedded", help="evaluate zest-tiny zero-shot on generated scenes (`zest eval-embedded -h`)")
    sub.add_parser("eval", help="measure zero-shot (or a head) on your labelled image folder (`zest eval -h`)")
    sub.add_parser("adapt", help="few-shot adapt to your labelled image folder; saves a head (`zest adapt -h`)")

    p = sub.add_parser("index", help="add every image under a folder to a collection of a running server")
    p.add_argument("dir", help="folder searched recursively for images")
    p.add_argument("--collection", required=True, help="collection name (created if missing)")
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the zest server")
    p.add_argument("--batch", type=int, default=16, help="images per request (at most the server's ZEST_MAX_IMAGES)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    from .store_cli import add_parser as add_store_parser

    add_store_parser(sub)

    p = sub.add_parser("serve", help="serve the REST API (bentoml serve)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_serve)
    return parser


# their own argparse reads everything after the name
PASS_THROUGH = {"train-embedded": cmd_train_embedded, "eval-embedded": cmd_eval_embedded, "eval": cmd_eval,
                "adapt": cmd_adapt}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASS_THROUGH:
        args = argparse.Namespace(func=PASS_THROUGH[argv[0]], rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZestError as exc:
        print(f"zest: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad ZEST_* setting
        print(f"zest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
