"""Shared fixtures: tiny open_clip models built in the test, no network at all."""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # the suite never touches a model hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The served default is ZEST_RUNTIME=auto, which exports the model to ONNX and times it at a server's first start:
# seconds per server, and the suite starts dozens. Servers and encoders here run torch unless a test asks for
# auto (tests/test_runtimes.py tests the default itself, in process and through a real server).
os.environ["ZEST_RUNTIME"] = "torch"

import open_clip
import pytest
import torch

TINY_ARCH = "ZestTest-Tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> str:
    """Register a few-MB open_clip architecture with the factory; return its name."""
    path = tmp_path_factory.mktemp("configs") / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return TINY_ARCH


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_arch, tmp_path_factory) -> str:
    """A local checkpoint directory of the tiny model with seeded random weights."""
    from zest.models.loading import save_checkpoint

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_arch, load_weights=False)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny-clip"
    return str(save_checkpoint(model, TINY_CFG, directory))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint):
    from zest.models.clip_encoder import ClipEncoder

    return ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def rec_model_dir(tmp_path_factory):
    """A small, untrained ZESRec model directory (the real MiniLM text encoder, random MLP/user model)."""
    from zest.models.rec.model import ZesRecConfig, ZesRecNet
    from zest.models.rec.zesrec import ZesRec, save

    torch.manual_seed(0)
    net = ZesRecNet(ZesRecConfig(hidden=32, dim=16, n_layers=1, n_heads=2, max_len=20))
    return save(ZesRec(net), tmp_path_factory.mktemp("zesrec") / "model")
