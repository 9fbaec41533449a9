"""Zero-shot evaluation of a CLIP encoder on procedural scenes (`zest eval-embedded`).

Every image is classified among ALL 42 colour x shape labels (chance = 1/42), with the labels
put into prompt templates, template embeddings averaged and renormalised, and
softmax(logit_scale * image @ class.T). Reported top-1:

* ``seen``: combinations that training images showed (new renders, never trained on);
* ``heldout``: the 10 combinations kept out of training entirely;
* ``heldout_synonym``: the held-out images, every label phrased with evaluation-only synonyms
  for both words ("crimson asterisk" for red star) — never a word of a training caption;
  ``heldout_colour_synonym`` / ``heldout_shape_synonym`` swap only one of the two words.

Any encoder with `encode_images` / `encode_texts` / `logit_scale` works (a `ClipEncoder`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...models.zero_shot import class_embeddings, zero_shot_probs
from ...prompts import TemplateSet, load_template_set
from . import scenes as S

DEFAULT_SEED = 2024
DEFAULT_N_PER_CLASS = 20
DEFAULT_TEMPLATE_SET = "photo"  # a shipped set (prompts/sets/photo.yaml): "a photo of a {}."

LABEL_KINDS = ("canonical", "synonym", "colour_synonym", "shape_synonym")


def class_labels(kind: str = "canonical", combos: Sequence[tuple[str, str]] = S.ALL_COMBOS) -> list[str]:
    """The label text of each (colour, shape) class; synonyms use each word's first synonym."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}: one of {', '.join(LABEL_KINDS)}")
    syn_c = kind in ("synonym", "colour_synonym")
    syn_s = kind in ("synonym", "shape_synonym")
    return [f"{S.SYNONYMS[c][0] if syn_c else c} {S.SYNONYMS[s][0] if syn_s else s}" for c, s in combos]


def eval_scenes(seed: int, n_per_class: int) -> tuple[list[S.Scene], list[S.Scene]]:
    """The seen-combination and held-out-combination evaluation scenes of `seed`."""
    seen = S.make_scenes(seed, n_per_class * len(S.TRAIN_COMBOS), "train", S.STREAM_EVAL_SEEN)
    heldout = S.make_scenes(seed, n_per_class * len(S.HELDOUT_COMBOS), "heldout", S.STREAM_EVAL_HELDOUT)
    return seen, heldout


def evaluate(encoder, seed: int = DEFAULT_SEED, n_per_class: int = DEFAULT_N_PER_CLASS,
             templates: TemplateSet | None = None) -> dict:
    """Zero-shot top-1 of `encoder` on seen / held-out / synonym-labelled held-out scenes."""
    templates = templates or load_template_set(DEFAULT_TEMPLATE_SET)
    if n_per_class < 1:
        raise ValueError("n_per_class must be >= 1")
    seen, heldout = eval_scenes(seed, n_per_class)
    index = {combo: i for i, combo in enumerate(S.ALL_COMBOS)}
    y_seen = np.array([index[sc.spec.combo] for sc in seen])
    y_held = np.array([index[sc.spec.combo] for sc in heldout])
    f_seen = np.asarray(encoder.encode_images([sc.image for sc in seen]), dtype=np.float32)
    f_held = np.asarray(encoder.encode_images([sc.image for sc in heldout]), dtype=np.float32)

    preds = {}
    for kind in LABEL_KINDS:
        cls = class_embeddings(encoder.encode_texts, class_labels(kind), templates.templates)
        preds[kind] = (zero_shot_probs(f_seen, cls, encoder.logit_scale).argmax(1),
                       zero_shot_probs(f_held, cls, encoder.logit_scale).argmax(1))

    p_seen, p_held = preds["canonical"]
    n = len(S.ALL_COMBOS)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (np.concatenate([y_seen, y_held]), np.concatenate([p_seen, p_held])), 1)

    def colour_ok(y, p):
        return float(np.mean([S.ALL_COMBOS[a][0] == S.ALL_COMBOS[b][0] for a, b in zip(y, p)]))

    def shape_ok(y, p):
        return float(np.mean([S.ALL_COMBOS[a][1] == S.ALL_COMBOS[b][1] for a, b in zip(y, p)]))

    return {
        "model_id": getattr(encoder, "model_id", None),
        "seed": seed,
        "n_per_class": n_per_class,
        "templates": templates.name,
        "n_classes": n,
        "chance": 1.0 / n,
        "n_seen_images": len(seen),
        "n_heldout_images": len(heldout),
        "seen_top1": float(np.mean(p_seen == y_seen)),
        "heldout_top1": float(np.mean(p_held == y_held)),
        "heldout_synonym_top1": float(np.mean(preds["synonym"][1] == y_held)),
        "heldout_colour_synonym_top1": float(np.mean(preds["colour_synonym"][1] == y_held)),
        "heldout_shape_synonym_top1": float(np.mean(preds["shape_synonym"][1] == y_held)),
        "seen_synonym_top1": float(np.mean(preds["synonym"][0] == y_seen)),
        "heldout_colour_top1": colour_ok(y_held, p_held),
        "heldout_shape_top1": shape_ok(y_held, p_held),
        "labels": class_labels("canonical"),
        "synonym_labels": class_labels("synonym"),
        "heldout_combos": [f"{c} {s}" for c, s in S.HELDOUT_COMBOS],
        "confusion": confusion.tolist(),
    }


def draw_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   highlight: Sequence[str] = (), title: str = "") -> Path:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG, drawn with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    m = np.asarray(confusion, dtype=np.float64)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    cell, font = 14, ImageFont.load_default()
    text_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(f"{lab} *", font=font)) for lab in labels) + 8
    top = text_w + (20 if title else 4)
    img = Image.new("RGB", (text_w + n * cell + 10, top + n * cell + 10), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 4), title, fill="black", font=font)
    header = Image.new("RGB", (text_w, n * cell), "white")  # column labels, drawn then rotated
    hdraw = ImageDraw.Draw(header)
    for i, lab in enumerate(labels):
        mark = " *" if lab in highlight else ""
        colour = (180, 0, 0) if mark else (0, 0, 0)
        draw.text((4, top + i * cell + 1), lab + mark, fill=colour, font=font)
        hdraw.text((4, i * cell + 1), lab + mark, fill=colour, font=font)
    img.paste(header.rotate(90, expand=True), (text_w, top - text_w))
    for i in range(n):
        for j in range(n):
            v = rows[i, j]
            shade = int(255 * (1 - v))
            fill = (shade, shade, 255) if i == j else (255, shade, shade)
            if m[i].sum() == 0:
                fill = (235, 235, 235)
            x, y = text_w + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(220, 220, 220))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def format_report(r: dict) -> str:
    lines = [
        (f"model {r['model_id']}: zero-shot top-1 among all {r['n_classes']} colour x shape classes "
        f"(chance {r['chance']:.1%}), {r['n_per_class']} images per class, seed {r['seed']}"),
        f"  templates: {r['templates']}",
        f"  seen combinations      ({r['n_seen_images']:5d} images): {r['seen_top1']:.1%}",
        (f"  held-out combinations  ({r['n_heldout_images']:5d} images): {r['heldout_top1']:.1%}"
        f"   (colour right {r['heldout_colour_top1']:.1%}, shape right {r['heldout_shape_top1']:.1%})"),
        f"  held-out, synonym labels (both words):   {r['heldout_synonym_top1']:.1%}",
        f"  held-out, synonym colour word only:      {r['heldout_colour_synonym_top1']:.1%}",
        f"  held-out, synonym shape word only:       {r['heldout_shape_synonym_top1']:.1%}",
        f"  seen, synonym labels (both words):       {r['seen_synonym_top1']:.1%}",
        f"  held-out combinations: {', '.join(r['heldout_combos'])}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`zest eval-embedded`: print zero-shot metrics and save the confusion matrix PNG."""
    parser = argparse.ArgumentParser(prog="zest eval-embedded", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="zest-tiny", help="model spec (default: zest-tiny)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="evaluation scene seed")
    parser.add_argument("--n-per-class", type=int, default=DEFAULT_N_PER_CLASS, help="images per combination")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto (default: cpu)")
    parser.add_argument("--templates", default=DEFAULT_TEMPLATE_SET,
                        help=f"shipped template set (`zest templates`; default: {DEFAULT_TEMPLATE_SET})")
    parser.add_argument("--confusion", default="zest-tiny-confusion.png", help="PNG path for the confusion matrix "
                        "('' to skip)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = parser.parse_args(argv)

    from ...models.clip_encoder import ClipEncoder
    from ...models.errors import ZestError

    try:
        templates = load_template_set(args.templates)
        encoder = ClipEncoder.from_spec(args.model, device=args.device)
    except ZestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate(encoder, seed=args.seed, n_per_class=args.n_per_class, templates=templates)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "confusion"}, indent=2))
    else:
        print(format_report(report))
    if args.confusion:
        path = draw_confusion(report["confusion"], report["labels"], args.confusion, highlight=report["heldout_combos"],
                              title=f"{report['model_id']}: true (rows) vs predicted; * = held out of training")
        print(f"confusion matrix: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
