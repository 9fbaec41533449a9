"""Train `zest-tiny` (`zest train-embedded`): a small image tower against frozen MiniLM.

1. render `n_images` procedural training scenes (held-out combinations excluded), each through the
   model's own eval transform, in worker processes (deterministic per scene index);
2. caption each image `captions_per_image` ways and run the frozen MiniLM tower once per unique
   caption (mean-pooled, pre-projection): the tower is locked, so this is exactly what it would
   compute at every step, without the cost;
3. contrastive CLIP loss (open_clip `ClipLoss`) over (image tower, text projection, logit scale),
   AdamW, warmup + cosine schedule, random horizontal flips;
4. write the checkpoint (trained tensors only + config), evaluate it through `load_zest_tiny` and
   `ClipEncoder` exactly as served, and write the model card.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import string
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ...models.embedded.model import (
    CHECKPOINT_DIR,
    DEFAULT_MODEL_CFG,
    DEFAULT_PREPROCESS_CFG,
    MODEL_CARD_FILE,
    WEIGHTS_FILE,
    build_model,
    build_preprocess,
    build_tokenizer,
    save_trained,
)
from . import scenes as S


@dataclass(frozen=True)
class TrainConfig:
    """zest-tiny's training settings; the defaults trained the shipped checkpoint (see its model card)."""

    seed: int = 0
    steps: int = 2400
    batch_size: int = 128
    n_images: int = field(default=40_000, metadata={"help": "training scenes to render"})
    captions_per_image: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 120
    text_lr_scale: float = field(default=0.1, metadata={"help": "learning-rate multiplier of the text projection"})
    eval_n_per_class: int = field(default=20, metadata={
        "help": "images per combination for the final evaluation (0: skip it)"})


# ------------------------------------------------------------------------------------------ data

def _pil_stage(preprocess):
    """The PIL-only front of the eval transform (resize, crop, RGB): everything before ToTensor."""
    from torchvision.transforms import Normalize, ToTensor

    stages = []
    for t in getattr(preprocess, "transforms", []):
        if isinstance(t, (ToTensor, Normalize)):
            break
        stages.append(t)
    return stages


def _render_chunk(args) -> np.ndarray:
    seed, start, stop, preprocess_cfg = args
    stages = _pil_stage(build_preprocess(preprocess_cfg))
    out = []
    combos = S.TRAIN_COMBOS
    for i in range(start, stop):
        img = S.render(S.sample_spec(seed, i, combos, S.STREAM_TRAIN))
        for t in stages:
            img = t(img)
        out.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
    return np.stack(out)


def render_training_images(seed: int, n: int, preprocess_cfg: dict, workers: int = 1,
                           progress: bool = True) -> torch.Tensor:
    """(n, 3, H, W) uint8: training scenes after the model's resize/crop (normalised per batch)."""
    from tqdm import tqdm

    chunk = 500
    jobs = [(seed, a, min(a + chunk, n), preprocess_cfg) for a in range(0, n, chunk)]
    bar = tqdm(total=n, desc="render scenes", unit="img", disable=not progress, file=sys.stderr)
    parts = []
    if workers <= 1:
        for job in jobs:
            parts.append(_render_chunk(job))
            bar.update(job[2] - job[1])
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for job, part in zip(jobs, pool.map(_render_chunk, jobs)):
                parts.append(part)
                bar.update(job[2] - job[1])
    bar.close()
    return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()


def training_captions(seed: int, n: int, k: int) -> tuple[list[str], np.ndarray]:
    """Unique captions and an (n, k) index into them: k phrasings of each training scene."""
    specs = S.make_specs(seed, n, "train", S.STREAM_TRAIN)
    vocab: dict[str, int] = {}
    idx = np.zeros((n, k), dtype=np.int64)
    for i, spec in enumerate(specs):
        for j in range(k):
            text = S.caption(spec, np.random.default_rng([spec.render_seed, j + 2]))
            idx[i, j] = vocab.setdefault(text, len(vocab))
    return list(vocab), idx


@torch.no_grad()
def pooled_text_features(model, tokenizer, texts: list[str], batch_size: int = 256,
                         progress: bool = True) -> torch.Tensor:
    """Frozen MiniLM mean-pooled features (pre-projection) of `texts`, as the tower computes them."""
    from tqdm import tqdm

    text = model.text
    was_training = text.training
    text.eval()
    out = []
    for i in tqdm(range(0, len(texts), batch_size), desc="encode captions (frozen MiniLM)", unit="batch",
                  disable=not progress, file=sys.stderr):
        ids = tokenizer(texts[i:i + batch_size])
        mask = (ids != text.config.pad_token_id).long()
        length = int(mask.sum(1).max())  # trailing padding changes nothing under the mask
        ids, mask = ids[:, :length], mask[:, :length]
        out.append(text.pooler(text.transformer(input_ids=ids, attention_mask=mask), mask).float())
    text.train(was_training)
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ train

def _param_groups(model, weight_decay: float, text_lr_scale: float = 1.0):
    decay, no_decay, text = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("text."):
            text.append(p)
        elif p.ndim < 2 or "bn" in name or "logit_scale" in name or "positional_embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": text, "weight_decay": weight_decay, "lr_scale": text_lr_scale}]


def train(out_dir: str | Path = CHECKPOINT_DIR, config: TrainConfig = TrainConfig(), workers: int | None = None,
          threads: int | None = None, progress: bool = True, write_card: bool = True) -> dict:
    """Train zest-tiny from scratch into `out_dir`; return the training summary and metrics."""
    seed, steps, batch_size, n_images = config.seed, config.steps, config.batch_size, config.n_images
    captions_per_image, lr, weight_decay = config.captions_per_image, config.lr, config.weight_decay
    warmup_steps, text_lr_scale, eval_n_per_class = config.warmup_steps, config.text_lr_scale, config.eval_n_per_class
    from open_clip.loss import ClipLoss
    from tqdm import tqdm

    t0 = time.time()
    if threads:
        torch.set_num_threads(threads)
    workers = workers if workers is not None else max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    torch.manual_seed(seed)
    np.random.seed(seed)
    out_dir = Path(out_dir)
    model_cfg, preprocess_cfg = DEFAULT_MODEL_CFG, DEFAULT_PREPROCESS_CFG

    model = build_model(model_cfg, pretrained_text=True)
    tokenizer = build_tokenizer(model_cfg)

    pixels = render_training_images(seed, n_images, preprocess_cfg, workers=workers, progress=progress)
    t_render = time.time() - t0
    captions, cap_idx = training_captions(seed, n_images, captions_per_image)
    pooled = pooled_text_features(model, tokenizer, captions, progress=progress)
    t_data = time.time() - t0

    mean = torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1) * 255
    std = torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1) * 255
    cap_idx_t = torch.from_numpy(cap_idx)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay, text_lr_scale), lr=lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step):
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))

    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    model.text.eval()  # locked tower: no dropout (and it only runs offline, above)
    order, pos, losses = torch.randperm(n_images, generator=gen), 0, []
    bar = tqdm(range(steps), desc="train zest-tiny", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        if pos + batch_size > n_images:
            order, pos = torch.randperm(n_images, generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = pixels[idx].float()
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x = (x - mean) / std
        which = torch.randint(captions_per_image, (len(idx),), generator=gen)
        t = pooled[cap_idx_t[idx, which]]

        for group in optimizer.param_groups:
            group["lr"] = lr_at(step) * group["lr_scale"]
        image_features = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        text_features = torch.nn.functional.normalize(model.text.proj(t), dim=-1)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    bar.close()
    t_train = time.time() - t0

    model.eval()
    summary = {
        "seed": seed, "steps": steps, "batch_size": batch_size, "n_images": n_images,
        "captions_per_image": captions_per_image, "unique_captions": len(captions), "lr": lr,
        "weight_decay": weight_decay, "warmup_steps": warmup_steps, "text_lr_scale": text_lr_scale,
        "threads": torch.get_num_threads(),
        "render_workers": workers, "final_loss": float(np.mean(losses[-50:])),
        "logit_scale": model.logit_scale.exp().item(),
        "render_seconds": round(t_render, 1), "data_seconds": round(t_data, 1),
        "train_seconds": round(t_train - t_data, 1), "total_seconds": round(t_train, 1),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    save_trained(model, out_dir, model_cfg, preprocess_cfg, extra={"training": summary})

    metrics = None
    if eval_n_per_class > 0:
        metrics = evaluate_checkpoint(out_dir, n_per_class=eval_n_per_class, confusion_png=out_dir / "confusion.png")
    summary["total_with_eval_seconds"] = round(time.time() - t0, 1)
    if write_card:
        write_model_card(out_dir, summary, metrics)
    return {"summary": summary, "metrics": metrics, "out_dir": str(out_dir)}


def evaluate_checkpoint(directory: str | Path, n_per_class: int, confusion_png: str | Path | None = None,
                        seed: int | None = None) -> dict:
    """Load `directory` as served (loader + ClipEncoder) and run the zero-shot evaluation."""
    from ...models.clip_encoder import ClipEncoder
    from ...models.embedded.loader import load_zest_tiny
    from .evaluate import DEFAULT_SEED, draw_confusion, evaluate

    device = torch.device("cpu")
    encoder = ClipEncoder(load_zest_tiny(device, checkpoint_dir=directory), device, precision="fp32")
    metrics = evaluate(encoder, seed=DEFAULT_SEED if seed is None else seed, n_per_class=n_per_class)
    if confusion_png:
        draw_confusion(metrics["confusion"], metrics["labels"], confusion_png, highlight=metrics["heldout_combos"],
                       title="zest-tiny: true (rows) vs predicted; * = held out of training")
    return metrics


# ------------------------------------------------------------------------------------------ card

def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _top_confusions(metrics: dict, k: int = 4) -> str:
    m, labels = np.asarray(metrics["confusion"]), metrics["labels"]
    pairs = sorted(((int(m[i, j]), labels[i], labels[j]) for i in range(len(m)) for j in range(len(m))
                    if i != j and m[i, j]), reverse=True)[:k]
    return ", ".join(f"{a} → {b} ({n})" for n, a, b in pairs) or "none"


CARD_TEMPLATES = Path(__file__).resolve().parent / "model_card"


def _render(template: str, **values) -> str:
    return string.Template((CARD_TEMPLATES / template).read_text()).substitute(values)


def write_model_card(directory: str | Path, summary: dict, metrics: dict | None, note: str = "") -> Path:
    """Write MODEL_CARD.md from the training summary and the evaluation metrics, rendered from the template
    files in training/embedded/model_card/."""
    directory = Path(directory)
    syn1 = {w: v[0] for w, v in S.SYNONYMS.items()}
    c0, s0 = S.HELDOUT_COMBOS[0]
    vis = DEFAULT_MODEL_CFG["vision_cfg"]
    if metrics:
        m = metrics
        pct = {k: _pct(m[k]) for k in ("chance", "seen_top1", "heldout_top1", "heldout_synonym_top1",
                                       "heldout_colour_synonym_top1", "heldout_shape_synonym_top1",
                                       "seen_synonym_top1", "heldout_colour_top1", "heldout_shape_top1")}
        results = _render("results.md.tmpl", **pct, n_classes=m["n_classes"], templates=m["templates"],
                          n_per_class=m["n_per_class"], seed=m["seed"], n_seen_images=m["n_seen_images"],
                          n_heldout_images=m["n_heldout_images"], c0=c0, s0=s0, syn_c0=syn1[c0], syn_s0=syn1[s0],
                          top_confusions=_top_confusions(m))
    else:
        results = "Not evaluated (trained with --eval-n-per-class 0): run `zest eval-embedded`."
    s = summary
    text = _render(
        "MODEL_CARD.md.tmpl", results=results, note=(" " + note) if note else "",
        embed_dim=DEFAULT_MODEL_CFG["embed_dim"], context_length=DEFAULT_MODEL_CFG["text_cfg"]["context_length"],
        vision_layers=tuple(vis["layers"]), vision_width=vis["width"], image_size=vis["image_size"],
        size_mb=f"{sum(p.stat().st_size for p in directory.iterdir() if p.is_file()) / 1e6:.1f}",
        n_shapes=len(S.SHAPES), shapes=", ".join(S.SHAPES), n_colours=len(S.COLOUR_NAMES),
        colours=", ".join(S.COLOUR_NAMES), n_combos=len(S.ALL_COMBOS), n_heldout_combos=len(S.HELDOUT_COMBOS),
        heldout=", ".join(f"{c} {s_}" for c, s_ in S.HELDOUT_COMBOS),
        synonyms="; ".join(f"{w} → {', '.join(v)}" for w, v in S.SYNONYMS.items()),
        n_images=s["n_images"], captions_per_image=s["captions_per_image"], unique_captions=s["unique_captions"],
        seed=s["seed"], lr=s["lr"], weight_decay=s["weight_decay"], warmup_steps=s["warmup_steps"],
        text_lr_scale=s.get("text_lr_scale", 1.0), steps=s["steps"], batch_size=s["batch_size"],
        final_loss=f"{s['final_loss']:.3f}", logit_scale=f"{s['logit_scale']:.1f}",
        total_minutes=f"{s['total_seconds'] / 60:.1f}", threads=s["threads"],
        render_seconds=f"{s['render_seconds']:.0f}", caption_seconds=f"{s['data_seconds'] - s['render_seconds']:.0f}",
        train_seconds=f"{s['train_seconds']:.0f}", torch=s["torch"])
    path = directory / MODEL_CARD_FILE
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ CLI

def main(argv: list[str] | None = None) -> int:
    """`zest train-embedded`: train zest-tiny and write its checkpoint directory + model card."""
    p = argparse.ArgumentParser(prog="zest train-embedded", description="Train zest's embedded zest-tiny model "
                                "(frozen MiniLM text tower, small conv image tower) on procedural scenes.")
    p.add_argument("--out", default=str(CHECKPOINT_DIR), help=f"checkpoint directory (default: {CHECKPOINT_DIR})")
    for f in fields(TrainConfig):  # one option per setting, with the dataclass's default
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f.metadata.get("help"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=None, help="scene rendering processes (default: threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    result = train(args.out, config, workers=args.workers, threads=args.threads, progress=not args.no_progress)
    s = result["summary"]
    print(f"wrote {result['out_dir']} ({WEIGHTS_FILE}) in {s['total_seconds'] / 60:.1f} min of training")
    if result["metrics"]:
        from .evaluate import format_report

        print(format_report(result["metrics"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
