"""`LoadedClip`: what every model loader returns and `ClipEncoder` takes. Imports nothing of zest's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoadedClip:
    """What a loader returns: everything `ClipEncoder` needs, nothing more."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # PIL RGB image -> (3, H, W) float tensor
    tokenizer: Callable[[list[str]], torch.Tensor]
    model_id: str
    preprocess_cfg: dict = field(default_factory=dict)
    model_cfg: dict | None = None  # the open_clip model config, where one describes the model fully
