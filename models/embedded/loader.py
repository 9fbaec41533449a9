"""`load_zest_tiny`: the shipped checkpoint + the package's pretrained MiniLM -> `LoadedClip`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..loaded import LoadedClip
from .model import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FROZEN_PREFIX,
    MODEL_ID,
    WEIGHTS_FILE,
    build_model,
    build_preprocess,
    build_tokenizer,
    read_config,
)

log = logging.getLogger(__name__)

TRAIN_HINT = "train it with `zest train-embedded` (python -m zest.training.embedded.train --out {dir})"


def load_zest_tiny(device: torch.device | str = "cpu", checkpoint_dir: str | Path | None = None) -> LoadedClip:
    """Build zest-tiny: open_clip model from the checkpoint config, MiniLM from its package,
    trained tensors from the checkpoint. Raises `ModelLoadError` if the checkpoint is missing or
    does not match the architecture."""
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else CHECKPOINT_DIR
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelLoadError(
            f"cannot load model '{MODEL_ID}': no trained checkpoint in {directory} "
            f"(expected {CONFIG_FILE} and {WEIGHTS_FILE}); " + TRAIN_HINT.format(dir=directory)
        )
    try:
        config = read_config(directory)
        model_cfg, preprocess_cfg = config["model_cfg"], config["preprocess_cfg"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': unreadable {config_path}: {exc}") from exc

    from safetensors.torch import load_file

    try:
        model = build_model(model_cfg, pretrained_text=True)
        state = load_file(str(weights_path))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': {type(exc).__name__}: {exc}") from exc

    frozen = {k for k in model.state_dict() if k.startswith(FROZEN_PREFIX)}
    stray = sorted(k for k in state if k.startswith(FROZEN_PREFIX))
    if stray:
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': {weights_path} holds text-tower weights "
                             f"({stray[:3]}...), but the frozen MiniLM must come from its package")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': {weights_path} does not fit its config: {exc}") from exc
    if unexpected:
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': unexpected tensors in {weights_path}: {unexpected[:5]}")
    if set(missing) != frozen:
        not_frozen = sorted(set(missing) - frozen)
        raise ModelLoadError(f"cannot load model '{MODEL_ID}': {weights_path} lacks trained tensors {not_frozen[:5]}")

    model = model.to(device).eval()
    return LoadedClip(
        model=model,
        preprocess=build_preprocess(preprocess_cfg),
        tokenizer=build_tokenizer(model_cfg),
        model_id=MODEL_ID,
        preprocess_cfg=dict(preprocess_cfg),
    )
