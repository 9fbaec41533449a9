"""Training loop for ZESRec: next-item prediction with a (sampled) softmax, early stopping, seeds.

Inputs are item *indices* into two frozen text-embedding matrices:

* ``input_emb``  -- text embeddings used for history items (what the user has consumed);
* ``target_emb`` -- text embeddings used for target / candidate items (may be the same matrix; the
  cold-item protocol uses texts without user tags here, because a brand-new item has no tags).

Loss: for every position t of every user sequence, softmax cross-entropy of the target item (the next
item, or with ``future_window = W`` an item drawn uniformly from the next W) against a candidate set of
items shared by the batch: with ``n_negatives = 0`` every item of the training catalogue (full softmax;
cheap for catalogues up to ~10^4 items since only an MLP runs per item); otherwise the batch's targets
(in-batch negatives, popularity-distributed) plus ``n_negatives`` items drawn uniformly from the
catalogue (which keeps the content bias calibrated as a popularity prior). Only the MLP + user model are
trained; text embeddings stay frozen.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...models.errors import InvalidInput
from ...models.rec.model import ZesRecConfig, ZesRecNet
from .baselines import TextPopularity

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    lr: float = 2e-3
    weight_decay: float = 0.01
    batch_size: int = 64  # sequences (chunks of <= max_len items) per step
    max_epochs: int = 20
    patience: int = 3  # epochs without validation improvement before stopping
    min_epochs: int = 2
    n_negatives: int = 1024  # 0 = full softmax over the training catalogue
    in_batch: bool = False  # with n_negatives > 0: also use the batch's targets as negatives
    future_window: int = 1  # 1 = next item; W > 1 = a random one of the next W items
    grad_clip: float = 5.0
    set_weight: float = 1.0  # > 0: also predict randomly held-out items of the user from the final state
    next_weight: float = 0.5  # weight of the next-item loss
    keep_min: float = 0.5  # held-out objective: keep a random U(keep_min, keep_max) share of each sequence
    keep_max: float = 0.95
    set_targets: int = 16  # held-out items per example used as targets
    replicas: int = 2  # held-out examples per user per epoch
    pop_init: bool = True  # start the (text-linear) content bias at the ridge fit of log(1 + training count)
    ema: float = 0.98  # > 0: validate / return an exponential moving average of the weights (per step)
    seed: int = 0
    threads: int = 1
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _chunks(seqs: Sequence[np.ndarray], L: int, W: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence into chunks of <= L inputs (random phase), with a target for every input."""
    ins, tgs = [], []
    for s in seqs:
        n = len(s)
        if n < 2:
            continue
        last = n - 1  # positions 0..n-2 have a target
        phase = int(rng.integers(1, L + 1))
        bounds = [0] + list(range(phase, last, L)) + [last]
        bounds = sorted({b for b in bounds if 0 <= b <= last})
        if W > 1:
            offs = np.minimum(rng.integers(1, W + 1, size=last), n - 1 - np.arange(last))
        else:
            offs = np.ones(last, dtype=np.int64)
        tgt_all = s[np.arange(last) + offs]
        for a, b in itertools.pairwise(bounds):
            if b <= a:
                continue
            x = np.full(L, -1, np.int64)
            y = np.full(L, -1, np.int64)
            x[: b - a] = s[a:b]
            y[: b - a] = tgt_all[a:b]
            ins.append(x)
            tgs.append(y)
    if not ins:
        raise InvalidInput("no training sequence has two or more interactions")
    return np.stack(ins), np.stack(tgs)


def _holdout_examples(seqs: Sequence[np.ndarray], L: int, cfg: TrainConfig, rng: np.random.Generator):
    """Per user (``cfg.replicas`` times): keep a random share of the sequence (order kept) as the input
    (its last L items), next-item targets along it, and up to ``cfg.set_targets`` of the dropped items as
    targets for the final state -- mirroring how unseen (cold) items are a random subset of a user's items."""
    xs, ys, zs = [], [], []
    M = cfg.set_targets
    for _ in range(cfg.replicas):
        for s in seqs:
            n = len(s)
            keep = rng.random(n) < rng.uniform(cfg.keep_min, cfg.keep_max)
            if keep.sum() < 1 or keep.all():
                keep[:] = True
                keep[rng.integers(n)] = False
            kept, held = s[keep][-L:], s[~keep]
            x = np.full(L, -1, np.int64)
            y = np.full(L, -1, np.int64)
            z = np.full(M, -1, np.int64)
            x[: len(kept)] = kept
            y[: len(kept) - 1] = kept[1:]
            hz = rng.choice(held, size=min(M, len(held)), replace=False)
            z[: len(hz)] = hz
            xs.append(x)
            ys.append(y)
            zs.append(z)
    return np.stack(xs), np.stack(ys), np.stack(zs)


def _ridge_init_bias(net: ZesRecNet, emb: np.ndarray, counts: np.ndarray, alpha: float = 1.0) -> None:
    """Set the text-linear content bias to the text-popularity ridge fit (text -> log(1 + count))."""
    tp = TextPopularity(alpha).fit(emb, counts)
    with torch.no_grad():
        net.item_bias.weight.copy_(torch.as_tensor(tp.w, dtype=torch.float32)[None, :])
        net.item_bias.bias.fill_(float(tp.b))


@dataclass
class FitResult:
    net: ZesRecNet
    best_epoch: int
    best_val: float
    history: list[dict]
    seconds: float


def fit(
    input_emb: np.ndarray,
    target_emb: np.ndarray,
    train_seqs: Sequence[np.ndarray],
    catalogue: np.ndarray,
    model_cfg: ZesRecConfig,
    cfg: TrainConfig,
    val_fn: Callable[[ZesRecNet], float] | None = None,
    epochs: int | None = None,
) -> FitResult:
    """Train a fresh ZesRecNet.

    ``catalogue``: item indices allowed as negatives (the training catalogue; every target must be in it).
    ``val_fn(net) -> float`` (higher is better) drives early stopping and the returned best state; without
    it the net trains for ``epochs`` (or ``cfg.max_epochs``) epochs.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = seed_everything(cfg.seed)
    catalogue = np.unique(np.asarray(catalogue, np.int64))
    if len(catalogue) < 2:
        raise InvalidInput("need at least two items in the training catalogue")
    seqs = [np.asarray(s, np.int64) for s in train_seqs if len(s) >= 2]
    if not seqs:
        raise InvalidInput("no user has two or more training interactions")
    in_cat = np.zeros(max(len(input_emb), len(target_emb)), bool)
    in_cat[catalogue] = True
    if not all(in_cat[s].all() for s in seqs):
        raise InvalidInput("a training interaction's item is not in the training catalogue")
    net = ZesRecNet(model_cfg)
    if cfg.pop_init and model_cfg.bias_from_text and model_cfg.use_bias:
        counts = np.bincount(np.concatenate(seqs), minlength=len(target_emb))
        _ridge_init_bias(net, np.asarray(target_emb)[catalogue], counts[catalogue])
    ema_net = copy.deepcopy(net) if cfg.ema > 0 else None
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    X_in = torch.as_tensor(input_emb, dtype=torch.float32)
    X_tg = torch.as_tensor(target_emb, dtype=torch.float32)
    cat_t = torch.as_tensor(catalogue)
    full = cfg.n_negatives <= 0 or cfg.n_negatives >= len(catalogue)
    n_epochs = epochs if epochs is not None else cfg.max_epochs
    best_val, best_state, best_epoch, bad = -math.inf, None, 0, 0
    history: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(range(1, n_epochs + 1), desc="zesrec", unit="ep", disable=not cfg.progress, leave=False)
    for epoch in bar:
        net.train()
        if cfg.set_weight > 0:
            xs, ys, zs = _holdout_examples(seqs, model_cfg.max_len, cfg, rng)
        else:
            xs, ys = _chunks(seqs, model_cfg.max_len, cfg.future_window, rng)
            zs = np.full((len(xs), 1), -1, np.int64)
        order = rng.permutation(len(xs))
        total, count = 0.0, 0
        for a in range(0, len(order), cfg.batch_size):
            idx = order[a : a + cfg.batch_size]
            x, y, z = xs[idx], ys[idx], zs[idx]
            lengths = (x >= 0).sum(axis=1)
            used = int(lengths.max())
            x, y = np.maximum(x[:, :used], 0), y[:, :used]
            valid = y >= 0
            # history items through the tower (each distinct item once)
            uniq_in, inv_in = np.unique(x, return_inverse=True)
            v_in, _ = net.item_tower(X_in[torch.from_numpy(uniq_in)])
            seq_v = v_in[torch.from_numpy(inv_in.reshape(x.shape))]
            all_states = net.user_states(seq_v)
            rows, targets, weights = [], [], []
            n_next = int(valid.sum())
            if n_next and cfg.next_weight > 0:
                rows.append(all_states[torch.from_numpy(valid)])
                targets.append(y[valid])
                weights.append(np.full(n_next, cfg.next_weight / n_next))
            set_mask = z >= 0
            n_set = int(set_mask.sum())
            if n_set:
                final = all_states[torch.arange(len(x)), torch.from_numpy(lengths - 1)]
                owner = np.nonzero(set_mask)[0]
                rows.append(final[torch.from_numpy(owner)])
                targets.append(z[set_mask])
                weights.append(np.full(n_set, cfg.set_weight / n_set))
            states = torch.cat(rows)
            targets = np.concatenate(targets)
            w = torch.from_numpy(np.concatenate(weights).astype(np.float32))
            if full:
                cand = cat_t
                pos = np.searchsorted(catalogue, targets)
            else:
                neg = catalogue[rng.integers(0, len(catalogue), size=cfg.n_negatives)]
                if cfg.in_batch:
                    cand_np, inv = np.unique(np.concatenate([targets, neg]), return_inverse=True)
                    pos = inv[: len(targets)]
                    cand = torch.from_numpy(cand_np)
                else:  # each row: its own target + the shared uniform negatives (target masked out)
                    cand_np = np.concatenate([np.unique(targets), np.unique(neg)])
                    n_u = len(np.unique(targets))
                    pos = None
                    cand = torch.from_numpy(cand_np)
            v_c, b_c = net.item_tower(X_tg[cand])
            if pos is None:
                t_pos = np.searchsorted(cand_np[:n_u], targets)
                pos_logit = (states * v_c[t_pos]).sum(-1) + b_c[t_pos]
                neg_logits = states @ v_c[n_u:].T + b_c[n_u:]
                neg_logits = neg_logits.masked_fill(torch.from_numpy(targets[:, None] == cand_np[None, n_u:]), float("-inf"))
                logits = torch.cat([pos_logit[:, None], neg_logits], dim=1)
                pos = np.zeros(len(targets), np.int64)
            else:
                logits = states @ v_c.T + b_c
            loss = (nn.functional.cross_entropy(logits, torch.from_numpy(pos), reduction="none") * w).sum()
            n_rows = len(targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            if ema_net is not None:
                with torch.no_grad():
                    for pe, p in zip(ema_net.parameters(), net.parameters()):
                        pe.mul_(cfg.ema).add_(p.detach(), alpha=1 - cfg.ema)
            total += float(loss.detach()) * n_rows
            count += n_rows
        rec = {"epoch": epoch, "loss": total / max(count, 1)}
        eval_net = ema_net if ema_net is not None else net
        if val_fn is not None:
            val = float(val_fn(eval_net))
            rec["val"] = val
            if val > best_val:
                best_val, best_epoch, bad = val, epoch, 0
                best_state = copy.deepcopy(eval_net.state_dict())
            else:
                bad += 1
        else:
            best_epoch = epoch
        history.append(rec)
        bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k != "epoch"})
        log.info("epoch %d: %s", epoch, rec)
        if val_fn is not None and epoch >= cfg.min_epochs and bad >= cfg.patience:
            break
    bar.close()
    if ema_net is not None and best_state is None:
        best_state = ema_net.state_dict()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return FitResult(net, best_epoch, best_val, history, time.perf_counter() - t0)
