"""ZESRec network: item tower (MLP over frozen text embeddings, with a content bias) + sequence user model.

No item-ID embedding anywhere: an item is represented only through its text embedding ``e`` (384-d,
unit norm), so any new item or catalogue can be scored.

* item tower: ``h = GELU(W1 e + b1)``, ``v = W2 h + b2 + W_lin e`` (``dim``-d item vector, MLP plus a
  linear skip path) and ``b = w_b . e + c`` (scalar content bias: a popularity prior predicted linearly
  from the text; ``bias_from_text=False`` takes it from the MLP hidden layer instead). Dropout on ``e``
  (``text_dropout``) regularises the tower so it generalises to unseen items instead of memorising the
  training items' popularity.
* user model: a causal Transformer (SASRec-style, pre-LN) over the item vectors of the user's last
  ``max_len`` items, with learned absolute position embeddings, plus a projection of the running mean of
  the item vectors (long-term taste). The state after the last item is the user vector ``u``.
* score(u, i) = ``u . v_i + b_i``.

This torch module is for training (training/rec); inference runs the same network in numpy (numpy_net.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput
from .config import ZesRecConfig

__all__ = ["ZesRecConfig", "ZesRecNet", "item_vectors", "user_vectors", "user_vectors_from_item_vectors"]


class ZesRecNet(nn.Module):
    _causal: torch.Tensor  # a registered buffer: the causal attention mask

    def __init__(self, cfg: ZesRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_in = nn.Linear(cfg.text_dim, cfg.hidden)
        self.item_out = nn.Linear(cfg.hidden, cfg.dim)
        self.item_bias = nn.Linear(cfg.text_dim if cfg.bias_from_text else cfg.hidden, 1)
        if cfg.linear_skip:
            self.item_lin = nn.Linear(cfg.text_dim, cfg.dim + 1, bias=False)
            nn.init.zeros_(self.item_lin.weight)
        self.item_drop = nn.Dropout(cfg.dropout)
        self.text_drop = nn.Dropout(cfg.text_dropout)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.in_norm = nn.LayerNorm(cfg.dim)
        self.in_drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.dim,
            nhead=cfg.n_heads,
            dim_feedforward=cfg.dim * 2,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.mean_proj = nn.Linear(cfg.dim, cfg.dim)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.item_bias.bias)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.register_buffer("_causal", torch.triu(torch.full((cfg.max_len, cfg.max_len), float("-inf")), 1), persistent=False)

    # ---- items
    def item_tower(self, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, text_dim) text embeddings -> (n, dim) item vectors and (n,) content biases."""
        e = self.text_drop(text_emb)
        h = self.item_drop(nn.functional.gelu(self.item_in(e)))
        v = self.item_out(h)
        if self.cfg.use_bias:
            b = self.item_bias(e if self.cfg.bias_from_text else h).squeeze(-1)
        else:
            b = torch.zeros(v.shape[0], device=v.device)
        if self.cfg.linear_skip:
            lin = self.item_lin(e)
            v = v + lin[:, :-1]
            if self.cfg.use_bias:
                b = b + lin[:, -1]
        return v, b

    # ---- users
    def user_states(self, seq_vecs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, dim) right-padded item vectors -> (B, L, dim) causal user states (state t sees items <= t)."""
        L = seq_vecs.shape[1]
        if L > self.cfg.max_len:
            raise InvalidInput(f"sequence length {L} > max_len {self.cfg.max_len}")
        pos = self.pos.weight[:L].unsqueeze(0)
        x = self.in_drop(self.in_norm(seq_vecs + pos))
        h = self.encoder(x, mask=self._causal[:L, :L], is_causal=True)
        h = self.out_norm(h)
        if self.cfg.use_mean:
            counts = torch.arange(1, L + 1, device=seq_vecs.device, dtype=seq_vecs.dtype).view(1, L, 1)
            running_mean = seq_vecs.cumsum(dim=1) / counts
            h = h + self.mean_proj(running_mean)
        return h

    def user_vectors(self, seq_vecs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) right-padded, lengths (B,) >= 1 -> (B, dim): the state after each user's last item."""
        states = self.user_states(seq_vecs)
        idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
        return states.gather(1, idx).squeeze(1)


@torch.no_grad()
def item_vectors(net: ZesRecNet, text_emb: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors (n, dim) and content biases (n,) for text embeddings (n, 384)."""
    net.eval()
    vs, bs = [], []
    for a in range(0, len(text_emb), batch):
        v, b = net.item_tower(torch.as_tensor(text_emb[a : a + batch], dtype=torch.float32))
        vs.append(v.numpy())
        bs.append(b.numpy())
    if not vs:
        return np.zeros((0, net.cfg.dim), np.float32), np.zeros(0, np.float32)
    return np.concatenate(vs), np.concatenate(bs)


@torch.no_grad()
def user_vectors_from_item_vectors(net: ZesRecNet, histories_vecs: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
    """User vectors (n, dim) from per-user (h_u, dim) arrays of history item vectors (chronological)."""
    net.eval()
    L = net.cfg.max_len
    out = []
    for a in range(0, len(histories_vecs), batch):
        chunk = histories_vecs[a : a + batch]
        lens = [min(L, len(h)) for h in chunk]
        if min(lens) < 1:
            raise InvalidInput("a user history is empty; at least one item is needed")
        T = max(lens)
        x = np.zeros((len(chunk), T, net.cfg.dim), np.float32)
        for r, h in enumerate(chunk):
            h = np.asarray(h, dtype=np.float32)[-T:]
            x[r, : len(h)] = h
        out.append(net.user_vectors(torch.from_numpy(x), torch.as_tensor(lens)).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.cfg.dim), np.float32)


def user_vectors(net: ZesRecNet, item_vecs: np.ndarray, histories: Sequence[np.ndarray]) -> np.ndarray:
    """User vectors for histories given as item indices into ``item_vecs``."""
    L = net.cfg.max_len
    return user_vectors_from_item_vectors(net, [item_vecs[np.asarray(h)[-L:]] for h in histories])
