"""ZESRec inference in numpy (float32): what :class:`models.rec.model.ZesRecNet` computes in eval mode, from
its weights as plain arrays, so that serving does not import torch (training stays torch).

The user model is the torch net's ``nn.TransformerEncoderLayer`` as model.py configures it: pre-LN
(``norm_first=True``), exact (erf) GELU, feed-forward width ``2 * dim``, LayerNorm eps 1e-5, multi-head
self-attention under a causal mask, no padding mask (histories are right-padded and the mask is causal, so a
user's state never sees the padding). tests/test_rec_numpy.py checks it against the torch net.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .config import ZesRecConfig

LN_EPS = 1e-5  # nn.LayerNorm's default, in_norm / out_norm and both norms of each encoder layer
FF_MULT = 2  # dim_feedforward = FF_MULT * dim
NORM_FIRST = True
USER_BATCH = 32  # histories per batched pass (attention holds batch x heads x T x T floats)

# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z >= 0: fractional error < 1.2e-7 for every z (Numerical
# Recipes' erfcc, a Chebyshev fit). GELU(x) = x/2 erfc(-x/sqrt(2)) from it, in float32, is within 4e-7 of the
# exact value for |x| <= 9 (torch's float32 GELU: 1.1e-6; tests/test_rec_numpy.py).
_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587,
         -0.82215223, 0.17087277)


def erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, elementwise, in the precision of ``x`` (float32 or float64)."""
    x = np.asarray(x)
    z = np.abs(x)
    t = 1 / (1 + z / 2)
    poly = np.zeros_like(t)
    for c in reversed(_ERFC[1:]):
        poly = (poly + c) * t
    ans = t * np.exp(-z * z + (poly + _ERFC[0]))
    return np.where(x >= 0, ans, 2 - ans)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)`` (torch's ``approximate="none"``)."""
    return x * erfc(x * -np.sqrt(0.5, dtype=x.dtype)) / 2


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(LN_EPS)) * weight + bias


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    y = x @ weight.T
    return y if bias is None else y + bias


def parameter_shapes(cfg: ZesRecConfig) -> dict[str, tuple[int, ...]]:
    """The state dict of ``ZesRecNet(cfg)``: parameter name -> shape."""
    d, ff = cfg.dim, FF_MULT * cfg.dim
    shapes: dict[str, tuple[int, ...]] = {
        "item_in.weight": (cfg.hidden, cfg.text_dim), "item_in.bias": (cfg.hidden,),
        "item_out.weight": (d, cfg.hidden), "item_out.bias": (d,),
        "item_bias.weight": (1, cfg.text_dim if cfg.bias_from_text else cfg.hidden), "item_bias.bias": (1,),
    }
    if cfg.linear_skip:
        shapes["item_lin.weight"] = (d + 1, cfg.text_dim)
    shapes.update({"pos.weight": (cfg.max_len, d), "in_norm.weight": (d,), "in_norm.bias": (d,)})
    for i in range(cfg.n_layers):
        p = f"encoder.layers.{i}."
        shapes.update({
            p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
            p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
            p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,),
            p + "linear2.weight": (d, ff), p + "linear2.bias": (d,),
            p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,),
        })
    shapes.update({"out_norm.weight": (d,), "out_norm.bias": (d,), "mean_proj.weight": (d, d), "mean_proj.bias": (d,)})
    return shapes


class NumpyZesRecNet:
    """The trained ZESRec network as float32 arrays: ``item_tower`` and ``user_vectors``, no dropout."""

    def __init__(self, cfg: ZesRecConfig, params: Mapping[str, np.ndarray]) -> None:
        if cfg.dim % cfg.n_heads:
            raise ValueError(f"dim {cfg.dim} is not a multiple of n_heads {cfg.n_heads}")
        expected = parameter_shapes(cfg)
        missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
        wrong = sorted(k for k in set(expected) & set(params) if tuple(np.shape(params[k])) != expected[k])
        problems = [f"{what} {names}" for what, names in (
            ("missing", missing), ("unexpected", unexpected),
            ("wrong shape", [(k, tuple(np.shape(params[k])), expected[k]) for k in wrong])) if names]
        if problems:
            raise ValueError("weights do not fit the config: " + "; ".join(problems))
        self.cfg = cfg
        self.params = {k: np.array(params[k], dtype=np.float32, order="C") for k in expected}  # a copy
        for a in self.params.values():
            a.flags.writeable = False

    @classmethod
    def from_module(cls, net: Any) -> NumpyZesRecNet:
        """The arrays of a torch ``ZesRecNet`` (copied: later training does not change them)."""
        return cls(net.cfg, {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()})

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    # ---- items
    def item_tower(self, text_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, text_dim) text embeddings -> (n, dim) item vectors and (n,) content biases."""
        p, cfg = self.params, self.cfg
        e = np.asarray(text_emb, np.float32)
        h = gelu(_linear(e, p["item_in.weight"], p["item_in.bias"]))
        v = _linear(h, p["item_out.weight"], p["item_out.bias"])
        if cfg.use_bias:
            b = _linear(e if cfg.bias_from_text else h, p["item_bias.weight"], p["item_bias.bias"])[:, 0]
        else:
            b = np.zeros(len(v), np.float32)
        if cfg.linear_skip:
            lin = _linear(e, p["item_lin.weight"])
            v = v + lin[:, :-1]
            if cfg.use_bias:
                b = b + lin[:, -1]
        return v, b

    # ---- users
    def _attention(self, x: np.ndarray, prefix: str) -> np.ndarray:
        """Causal multi-head self-attention of (B, T, d), as nn.MultiheadAttention (batch_first)."""
        p, heads = self.params, self.cfg.n_heads
        B, T, d = x.shape
        hd = d // heads
        qkv = _linear(x, p[prefix + "in_proj_weight"], p[prefix + "in_proj_bias"])
        q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(B, T, heads, hd).transpose(0, 2, 1, 3) for i in range(3))
        scores = (q * np.float32(1.0 / np.sqrt(hd))) @ k.transpose(0, 1, 3, 2)  # (B, H, T, T)
        scores = np.where(np.tri(T, dtype=bool), scores, np.float32(-np.inf))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        attn = scores / scores.sum(axis=-1, keepdims=True)
        out = (attn @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        return _linear(out, p[prefix + "out_proj.weight"], p[prefix + "out_proj.bias"])

    def _encoder_layer(self, x: np.ndarray, i: int) -> np.ndarray:
        p, pre = self.params, f"encoder.layers.{i}."
        x = x + self._attention(layer_norm(x, p[pre + "norm1.weight"], p[pre + "norm1.bias"]), pre + "self_attn.")
        y = layer_norm(x, p[pre + "norm2.weight"], p[pre + "norm2.bias"])
        y = gelu(_linear(y, p[pre + "linear1.weight"], p[pre + "linear1.bias"]))
        return x + _linear(y, p[pre + "linear2.weight"], p[pre + "linear2.bias"])

    def user_states(self, seq_vecs: np.ndarray) -> np.ndarray:
        """(B, L, dim) right-padded item vectors -> (B, L, dim) causal user states (state t sees items <= t)."""
        p, cfg = self.params, self.cfg
        seq = np.asarray(seq_vecs, np.float32)
        L = seq.shape[1]
        if L > cfg.max_len:
            raise InvalidInput(f"sequence length {L} > max_len {cfg.max_len}")
        x = layer_norm(seq + p["pos.weight"][:L], p["in_norm.weight"], p["in_norm.bias"])
        for i in range(cfg.n_layers):
            x = self._encoder_layer(x, i)
        h = layer_norm(x, p["out_norm.weight"], p["out_norm.bias"])
        if cfg.use_mean:
            running_mean = np.cumsum(seq, axis=1) / np.arange(1, L + 1, dtype=np.float32)[None, :, None]
            h = h + _linear(running_mean, p["mean_proj.weight"], p["mean_proj.bias"])
        return h

    def user_vectors(self, histories: Sequence[np.ndarray], batch: int = USER_BATCH) -> np.ndarray:
        """(n, dim) user vectors from per-user (h_u, dim) chronological item vectors, h_u >= 1; only the last
        ``max_len`` items count. Histories of similar length are batched together (less padding)."""
        L, d = self.cfg.max_len, self.cfg.dim
        hs = [np.asarray(h, np.float32)[-L:] for h in histories]
        for h in hs:
            if h.ndim != 2 or h.shape[1] != d:
                raise InvalidInput(f"history item vectors must have shape (n, {d}), got {h.shape}")
            if len(h) == 0:
                raise InvalidInput("a user history is empty; at least one item is needed")
        out = np.zeros((len(hs), d), np.float32)
        order = np.argsort([len(h) for h in hs], kind="stable")
        for a in range(0, len(order), batch):
            rows = order[a:a + batch]
            lens = np.array([len(hs[r]) for r in rows])
            x = np.zeros((len(rows), int(lens.max()), d), np.float32)
            for j, r in enumerate(rows):
                x[j, :lens[j]] = hs[r]
            out[rows] = self.user_states(x)[np.arange(len(rows)), lens - 1]
        return out
