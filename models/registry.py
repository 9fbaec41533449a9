"""Models that zest ships itself, by name. Each entry loads without network."""

from __future__ import annotations

from typing import Callable

import torch

from .loading import LoadedClip


def _load_zest_tiny(device: torch.device) -> LoadedClip:
    from .embedded import load_zest_tiny

    return load_zest_tiny(device)


ZEST_MODELS: dict[str, Callable[[torch.device], LoadedClip]] = {
    "zest-tiny": _load_zest_tiny,
}
