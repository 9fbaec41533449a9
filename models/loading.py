"""Turn a `ModelSpec` into a loaded open_clip model, its eval transform and its tokenizer.

This is the one place that talks to open_clip's factory; failures come out as a single
`ModelLoadError` that names the spec and what to do, not a stack of library traces.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ModelLoadError
from .spec import RANDOM_WEIGHTS, ModelSpec

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

OFFLINE_HINT = (
    "the weights are not in the local cache and the model hub cannot be reached. On a machine without "
    "network, pass a local checkpoint directory (local-dir:/path holding open_clip_config.json and weights), "
    "an ARCH/path/to/weights file, or fill the Hugging Face cache (HF_HOME) on a machine that has network"
)


@dataclass
class LoadedClip:
    """What a loader returns: everything `ClipEncoder` needs, nothing more."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # PIL RGB image -> (3, H, W) float tensor
    tokenizer: Callable[[list[str]], torch.Tensor]
    model_id: str
    preprocess_cfg: dict = field(default_factory=dict)


def _is_offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    needles = ("offline", "connect", "resolve", "network", "timed out", "localentrynotfound", "max retries",
               "couldn't find", "cannot find the requested files", "name or service not known", "download")
    chain = exc
    while chain is not None:
        text += f" {type(chain).__name__}: {chain}".lower()
        chain = chain.__cause__ or chain.__context__
    return any(n in text for n in needles)


def _open_clip_args(spec: ModelSpec) -> tuple[str, str | None, bool]:
    """(model_name, pretrained, load_weights) for open_clip's factory."""
    import open_clip

    if spec.kind == "hf-hub":
        return f"hf-hub:{spec.name}", None, True
    if spec.kind == "local-dir":
        path = Path(spec.name)
        if not (path / CONFIG_FILE).is_file():
            raise ModelLoadError(
                f"cannot load model 'local-dir:{path}': no {CONFIG_FILE} there. A local checkpoint is a "
                f"directory with {CONFIG_FILE} and {WEIGHTS_FILE} (zest.models.loading.save_checkpoint writes one)"
            )
        return f"local-dir:{path}", None, True
    arch = spec.name
    if arch not in open_clip.list_models():
        raise ModelLoadError(
            f"cannot load model '{spec.model_id}': unknown open_clip architecture {arch!r} "
            f"(open_clip.list_models() lists the known ones)"
        )
    if spec.pretrained == RANDOM_WEIGHTS:
        return arch, None, False
    if os.path.isfile(spec.pretrained):
        return arch, spec.pretrained, True
    if spec.pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelLoadError(
            f"cannot load model '{spec.model_id}': {spec.pretrained!r} is neither a pretrained tag of {arch} "
            f"(known: {tags}) nor an existing weights file"
        )
    return arch, spec.pretrained, True


def load_open_clip(spec: ModelSpec, device: torch.device) -> LoadedClip:
    """Load any open_clip model (built-in arch + tag/file/random, hf-hub, local dir)."""
    import open_clip

    model_name, pretrained, load_weights = _open_clip_args(spec)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, load_weights=load_weights, device=device
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip / hub / torch errors: one clear message instead
        if _is_offline_error(exc):
            raise ModelLoadError(f"cannot load model '{spec.model_id}': {OFFLINE_HINT}. (cause: {exc})") from exc
        raise ModelLoadError(f"cannot load model '{spec.model_id}': {type(exc).__name__}: {exc}") from exc
    if not load_weights:
        log.warning("model %s has random weights: its predictions are meaningless", spec.model_id)
    return LoadedClip(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_id=spec.model_id,
        preprocess_cfg=dict(getattr(model.visual, "preprocess_cfg", {})),
    )


def save_checkpoint(model: torch.nn.Module, model_cfg: dict, directory: str | Path,
                    preprocess_cfg: dict | None = None) -> Path:
    """Write `model` as a local open_clip checkpoint directory that `local-dir:` specs load."""
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory
