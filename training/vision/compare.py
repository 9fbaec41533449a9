"""The measurement behind `zest adapt`'s default method: every method on held-out scenes.

    python -m zest.training.vision.compare            # 6 min on 2 shared CPU cores (--quick: 1 min)

Protocol: zest-tiny; the scene generator's 42 colour × shape classes, 18 images per class from a stream
that neither training nor the model card's evaluation uses, for 2 scene seeds. For k = 1, 2, 4, 8
training images per class (2 random draws per seed), the last 10 images of every class are held out;
every method chooses its hyperparameters by cross-validation on the k-shot training images only
(adapt.fit) and is scored once on the held-out images. Labels are the canonical names ("red circle") or
the evaluation-only synonyms of the model card ("crimson ring"), template set imagenet-simple. A second
table is the issue's setting: 12 classes (red/blue/green/yellow × circle/square/triangle, named
crimson/navy/lime/canary × ring/box/delta), 16 images per class, 25 % held out as `zest adapt` does
by default, 3 seeds.

The recorded run and what it decided are in the README section "Evaluate and adapt on your own images".
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ...prompts import load_template_set
from ..embedded import scenes as S
from .adapt import METHODS, fit
from .data import holdout_split
from .evaluate import TextEmbeddings

STREAM_ADAPT = 3  # scenes.py uses 0 (training), 1 and 2 (evaluation)
COLOURS_12 = ("red", "blue", "green", "yellow")
SHAPES_12 = ("circle", "square", "triangle")


def label(combo: tuple[str, str], synonym: bool) -> str:
    c, s = combo
    return f"{S.SYNONYMS[c][0]} {S.SYNONYMS[s][0]}" if synonym else f"{c} {s}"


def scene_features(encoder, combos, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    specs = [S.sample_spec(seed, i, combos, STREAM_ADAPT) for i in range(per_class * len(combos))]
    feats = np.asarray(encoder.encode_images([S.render(sp) for sp in specs]), dtype=np.float32)
    return feats, np.array([combos.index(sp.combo) for sp in specs], dtype=np.int64)


def top1(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probs.argmax(1) == labels))


def run(encoder, shots=(1, 2, 4, 8), seeds=(0, 1), draws=2, templates: str = "imagenet-simple",
        log=print) -> dict:
    texts = TextEmbeddings(encoder.encode_texts)
    tset = load_template_set(templates).templates
    s = encoder.logit_scale
    results: dict = {"kshot": {}, "issue": {}}

    combos = list(S.ALL_COMBOS)
    data = {seed: scene_features(encoder, combos, 18, seed) for seed in seeds}
    for synonym in (True, False):
        kind = "synonym" if synonym else "canonical"
        w0 = texts.class_embeddings([[t.format(label(c, synonym)) for t in tset] for c in combos])
        for k in shots:
            rows: dict[str, list[float]] = {}
            for seed in seeds:
                feats, y = data[seed]
                for d in range(draws):
                    rng = np.random.default_rng([seed, d, k])
                    train, held = [], []
                    for c in range(len(combos)):
                        idx = np.flatnonzero(y == c)
                        held += idx[-10:].tolist()
                        train += rng.permutation(idx[:-10])[:k].tolist()
                    ft, yt, fh, yh = feats[train], y[train], feats[held], y[held]
                    rows.setdefault("zero-shot", []).append(top1(fh @ w0.T, yh))
                    for m in METHODS:
                        rows.setdefault(m, []).append(top1(fit(m, ft, yt, w0, s).logits(fh), yh))
            results["kshot"][(kind, k)] = {m: float(np.mean(v)) for m, v in rows.items()}
            log(f"{kind:9s} {k}-shot  " + "  ".join(f"{m} {np.mean(v):.3f}" for m, v in rows.items()))

    combos12 = [(c, sh) for c in COLOURS_12 for sh in SHAPES_12]
    for synonym in (True, False):
        kind = "synonym" if synonym else "canonical"
        w0 = texts.class_embeddings([[t.format(label(c, synonym)) for t in tset] for c in combos12])
        rows = {}
        for seed in (0, 1, 2):
            feats, y = scene_features(encoder, combos12, 16, 100 + seed)
            train, held = holdout_split(y, 0.25, seed)
            rows.setdefault("zero-shot", []).append(top1(feats[held] @ w0.T, y[held]))
            for m in METHODS:
                rows.setdefault(m, []).append(top1(fit(m, feats[train], y[train], w0, s).logits(feats[held]),
                                                   y[held]))
        results["issue"][kind] = {m: (float(np.mean(v)), float(np.min(v))) for m, v in rows.items()}
        log(f"{kind:9s} 12 classes x 16 images  " + "  ".join(f"{m} {np.mean(v):.3f}" for m, v in rows.items()))
    return results


def markdown(results: dict) -> str:
    cols = ["zero-shot", *METHODS]
    lines = ["| labels | shots | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for (kind, k), row in results["kshot"].items():
        best = max(row[m] for m in METHODS)
        cells = [f"**{row[m]:.1%}**" if m in METHODS and row[m] == best else f"{row[m]:.1%}" for m in cols]
        lines.append(f"| {kind} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "| 12 classes, 16 images each, 25 % held out (mean / min of 3 seeds) | " + " | ".join(cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for kind, row in results["issue"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{row[m][0]:.1%} / {row[m][1]:.1%}" for m in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zest.training.vision.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="zest-tiny")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 draw, 2 and 4 shots only")
    args = parser.parse_args(argv)
    from ...models.clip_encoder import ClipEncoder

    t0 = time.time()
    encoder = ClipEncoder.from_spec(args.model, device="cpu")
    kw = {"shots": (2, 4), "seeds": (0,), "draws": 1} if args.quick else {}
    results = run(encoder, log=lambda m: print(m, file=sys.stderr, flush=True), **kw)
    print(markdown(results))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
