"""Model specs: one string names any model zest can load.

    zest-tiny                       a model zest ships (see models/registry.py)
    ViT-B-32/laion2b_s34b_b79k      open_clip architecture / pretrained tag
    ViT-B-32/path/to/weights.pt     open_clip architecture / weights file
    ViT-B-32/random                 open_clip architecture, untrained (benchmarks, tests)
    hf-hub:ORG/NAME                 an open_clip model on the Hugging Face hub (or its local cache)
    local-dir:/path  or  /path      a directory with open_clip_config.json + weights
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "zest" | "hf-hub" | "local-dir" | "open_clip"
    name: str  # zest model name, hub id, absolute directory, or open_clip architecture
    pretrained: str | None = None  # open_clip only: tag, weights file, or "random"

    @property
    def model_id(self) -> str:
        """A stable, canonical identifier (used in responses and cache keys)."""
        if self.kind == "open_clip":
            return f"{self.name}/{self.pretrained}"
        if self.kind == "zest":
            return self.name
        return f"{self.kind}:{self.name}"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.path.isdir(spec)


def parse_spec(spec: str) -> ModelSpec:
    """Turn a spec string into a `ModelSpec`, without loading anything."""
    from .registry import ZEST_MODELS

    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec: pass e.g. 'zest-tiny' or 'ViT-B-32/laion2b_s34b_b79k'")
    if spec in ZEST_MODELS:
        return ModelSpec("zest", spec)
    if spec.startswith("hf-hub:"):
        hub_id = spec[len("hf-hub:"):]
        if hub_id.count("/") != 1:
            raise ModelLoadError(f"model spec {spec!r}: expected hf-hub:ORG/NAME")
        return ModelSpec("hf-hub", hub_id)
    if spec.startswith("local-dir:") or _looks_like_path(spec):
        path = Path(spec.removeprefix("local-dir:")).expanduser().resolve()
        return ModelSpec("local-dir", str(path))
    arch, sep, pretrained = spec.partition("/")
    if not sep or not pretrained:
        raise ModelLoadError(
            f"model spec {spec!r} names no weights: use ARCH/TAG (e.g. ViT-B-32/laion2b_s34b_b79k), "
            f"ARCH/path/to/weights.pt, ARCH/{RANDOM_WEIGHTS} for untrained weights, hf-hub:ORG/NAME, "
            f"a local checkpoint directory, or one of zest's models: {', '.join(sorted(ZEST_MODELS))}"
        )
    return ModelSpec("open_clip", arch, pretrained)
