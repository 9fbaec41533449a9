"""The numpy ZESRec network (models/rec/numpy_net.py, what serving runs) computes what the torch ZesRecNet
(models/rec/model.py, what training runs) computes in eval mode: on random nets of several configs and on the
shipped checkpoint, item rows, user vectors and rankings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from zest.models.errors import InvalidInput, ModelLoadError
from zest.models.rec import numpy_net
from zest.models.rec.config import ZesRecConfig
from zest.models.rec.model import ZesRecNet, item_vectors, user_vectors_from_item_vectors
from zest.models.rec.numpy_net import NumpyZesRecNet, gelu, parameter_shapes
from zest.models.rec.zesrec import ZesRec, load, save
from zest.service.recommender import shipped_model_dir

torch.set_num_threads(1)
CONFIGS = {
    "default-like": ZesRecConfig(hidden=32, dim=16, n_layers=2, n_heads=2, max_len=12),
    "one layer, 4 heads, no mean": ZesRecConfig(hidden=24, dim=8, n_layers=1, n_heads=4, max_len=9, use_mean=False),
    "bias from hidden, no skip": ZesRecConfig(hidden=16, dim=12, n_layers=3, n_heads=3, max_len=10,
                                              bias_from_text=False, linear_skip=False),
    "no bias": ZesRecConfig(hidden=16, dim=8, n_layers=1, n_heads=1, max_len=6, use_bias=False),
}


def _random_net(cfg: ZesRecConfig, seed: int = 0) -> ZesRecNet:
    """Every parameter random (the zero-initialised skip path and bias too), at scales that keep activations O(1)."""
    torch.manual_seed(seed)
    net = ZesRecNet(cfg).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 2 and not name.startswith("pos"):
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
            elif "norm" in name and name.endswith(".weight"):  # the LayerNorms' scales
                p.normal_(1.0, 0.3)
            else:
                p.normal_(0.0, 0.5)
    return net


def _unit(rng: np.random.Generator, n: int, d: int = 384) -> np.ndarray:
    e = rng.standard_normal((n, d)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _histories(rng: np.random.Generator, vecs: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Single items, short ones, exactly max_len, longer than max_len (truncated): one call pads them together."""
    lengths = [1, 2, 3, max_len - 1, max_len, max_len + 4, 1, 5, 2 * max_len]
    return [vecs[rng.integers(0, len(vecs), n)] for n in lengths]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def test_gelu_is_exact_gelu():
    x = np.linspace(-9, 9, 20001, dtype=np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    mine = gelu(x)
    assert mine.dtype == np.float32
    np.testing.assert_allclose(mine, exact, rtol=0, atol=4e-7)
    np.testing.assert_allclose(mine, torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), rtol=0, atol=2e-6)
    assert not np.allclose(mine, torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy(),
                           rtol=0, atol=1e-5)  # the tanh approximation is another function: the check can tell


def test_the_torch_layer_is_configured_as_the_numpy_net_assumes():
    net = ZesRecNet(CONFIGS["default-like"])
    for layer in net.encoder.layers:
        assert layer.norm_first is numpy_net.NORM_FIRST and layer.self_attn.batch_first
        assert layer.activation is torch.nn.functional.gelu
        assert layer.linear1.out_features == numpy_net.FF_MULT * net.cfg.dim
        assert layer.norm1.eps == layer.norm2.eps == numpy_net.LN_EPS
        assert layer.self_attn.bias_k is None and not layer.self_attn.add_zero_attn
    assert net.encoder.norm is None
    assert net.in_norm.eps == net.out_norm.eps == numpy_net.LN_EPS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_shapes_are_the_torch_state_dict(name):
    cfg = CONFIGS[name]
    assert parameter_shapes(cfg) == {k: tuple(v.shape) for k, v in ZesRecNet(cfg).state_dict().items()}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_nets_numpy_equals_torch(name):
    cfg = CONFIGS[name]
    net = _random_net(cfg)
    fast = NumpyZesRecNet.from_module(net)
    rng = np.random.default_rng(1)
    emb = _unit(rng, 200)
    v, b = item_vectors(net, emb)
    v_np, b_np = fast.item_tower(emb)
    assert v_np.dtype == b_np.dtype == np.float32
    np.testing.assert_allclose(v_np, v, rtol=0, atol=1e-5)
    np.testing.assert_allclose(b_np, b, rtol=0, atol=1e-5)
    assert cfg.use_bias or not b_np.any()

    hs = _histories(rng, v, cfg.max_len)
    users = user_vectors_from_item_vectors(net, hs)
    np.testing.assert_allclose(fast.user_vectors(hs), users, rtol=0, atol=1e-5)
    for h, u in zip(hs, users):  # alone (no padding at all) as in one /recommend request
        np.testing.assert_allclose(fast.user_vectors([h])[0], u, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.user_vectors(hs, batch=2), users, rtol=0, atol=1e-5)

    # every causal state of a right-padded batch (the padding is zeros, as torch's callers pad)
    x = np.zeros((3, cfg.max_len, cfg.dim), np.float32)
    for j, n in enumerate((1, 4, cfg.max_len)):
        x[j, :n] = v[:n]
    with torch.no_grad():
        states = net.user_states(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fast.user_states(x), states, rtol=0, atol=1e-5)

    rows = np.concatenate([v, b[:, None]], axis=1)
    rows_np = np.concatenate([v_np, b_np[:, None]], axis=1)
    scores = np.concatenate([users, np.ones((len(users), 1), np.float32)], axis=1) @ rows.T
    scores_np = np.concatenate([fast.user_vectors(hs), np.ones((len(hs), 1), np.float32)], axis=1) @ rows_np.T
    np.testing.assert_array_equal(_top(scores_np, 20), _top(scores, 20))


def test_a_net_that_differs_is_seen():
    """The comparison is not blind: another seed's weights give other vectors."""
    cfg = CONFIGS["default-like"]
    rng = np.random.default_rng(1)
    emb = _unit(rng, 20)
    v, _ = item_vectors(_random_net(cfg, seed=0), emb)
    assert not np.allclose(NumpyZesRecNet.from_module(_random_net(cfg, seed=1)).item_tower(emb)[0], v, atol=1e-3)


def test_empty_and_malformed_histories():
    fast = NumpyZesRecNet.from_module(_random_net(CONFIGS["default-like"]))
    with pytest.raises(InvalidInput, match="empty"):
        fast.user_vectors([np.zeros((2, 16), np.float32), np.zeros((0, 16), np.float32)])
    with pytest.raises(InvalidInput, match="shape"):
        fast.user_vectors([np.zeros((2, 5), np.float32)])
    assert fast.user_vectors([]).shape == (0, 16)
    rec = ZesRec(fast)
    with pytest.raises(InvalidInput, match="empty"):
        rec.user_vector(np.zeros((0, rec.dim), np.float32))
    assert rec.user_vectors([]).shape == (0, rec.dim)


@pytest.fixture(scope="module")
def shipped_torch() -> ZesRecNet:
    from safetensors.torch import load_file

    cfg = json.loads((shipped_model_dir() / "config.json").read_text())
    net = ZesRecNet(ZesRecConfig.from_dict(cfg["model"]))
    net.load_state_dict(load_file(str(shipped_model_dir() / "model.safetensors")), strict=True)
    return net.eval()


def test_shipped_checkpoint_numpy_equals_torch(shipped_torch):
    rec = load(shipped_model_dir())
    assert isinstance(rec.net, NumpyZesRecNet)
    rng = np.random.default_rng(2)
    emb = _unit(rng, 2000)
    v, b = item_vectors(shipped_torch, emb)
    rows = rec.embed_text_embeddings(emb)
    np.testing.assert_allclose(rows, np.concatenate([v, b[:, None]], axis=1), rtol=0, atol=1e-5)

    hs = [rows[rng.integers(0, len(rows), n)] for n in (1, 2, 7, 50, 199, 200, 260, 1, 30)]
    users = user_vectors_from_item_vectors(shipped_torch, [h[:, :-1] for h in hs])
    mine = rec.user_vectors(hs)
    np.testing.assert_allclose(mine[:, :-1], users, rtol=0, atol=1e-5)
    assert (mine[:, -1] == 1).all()
    scores = np.concatenate([users, np.ones((len(users), 1), np.float32)], axis=1) @ rows.T
    np.testing.assert_array_equal(_top(mine @ rows.T, 50), _top(scores, 50))
    for j, h in enumerate(hs):  # one user at a time, history excluded: the service's candidates path
        u = rec.user_vector(h)
        np.testing.assert_allclose(u[:-1], users[j], rtol=0, atol=1e-5)
        exclude = [int(i) for i in np.flatnonzero((rows[:, None, :] == h[None, :, :]).all(-1).any(-1))]
        top, _ = rec.recommend(u, rows, k=20, exclude=exclude)
        expected = [int(i) for i in _top(scores[j], 20 + len(exclude)) if i not in exclude][:20]
        assert top.tolist() == expected


def test_saved_files_load_in_torch_and_back(tmp_path):
    """save() writes the arrays with safetensors.numpy: training (torch) reads them strictly, load() reads them back."""
    from safetensors.torch import load_file

    net = _random_net(CONFIGS["default-like"])
    save(ZesRec(net), tmp_path / "m")
    again = ZesRecNet(net.cfg)
    again.load_state_dict(load_file(str(tmp_path / "m" / "model.safetensors")), strict=True)
    for k, t in net.state_dict().items():
        assert torch.equal(t, again.state_dict()[k]), k
    back = load(tmp_path / "m")
    for k, a in back.net.state_dict().items():
        np.testing.assert_array_equal(a, net.state_dict()[k].numpy())


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    from safetensors.numpy import save_file

    d = tmp_path / "m"
    save(ZesRec(_random_net(CONFIGS["default-like"])), d)
    state = load(d).net.state_dict()
    cases = {"missing": {k: v for k, v in state.items() if k != "mean_proj.bias"},
             "unexpected": {**state, "extra.weight": np.zeros(3, np.float32)},
             "wrong shape": {**state, "pos.weight": np.zeros((5, 16), np.float32)}}
    for what, bad in cases.items():
        save_file(bad, str(d / "model.safetensors"))
        with pytest.raises(ModelLoadError, match=what):
            load(d)
