"""One model factory: a parsed spec -> `LoadedClip`, through one loader table (data).

    spec string --parse_spec (models/spec.py, parsing only)--> ModelSpec --LOADERS[spec.kind]--> LoadedClip

| kind      | loader                                   | where the weights come from                     |
|-----------|------------------------------------------|-------------------------------------------------|
| zest      | the SHIPPED_MODELS entry (spec.py)       | files inside the zest package                   |
| open_clip | loading.load_open_clip                   | a pretrained tag (hub or cache), a file, random |
| hf-hub    | loading.load_open_clip                   | an open_clip repository on the hub (or cache)   |
| local-dir | loading.load_open_clip                   | a checkpoint directory                          |
| bento     | loading.load_bento_model                 | the BentoML model store (`zest models import`)  |
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

import torch

from .loaded import LoadedClip
from .loading import load_bento_model, load_open_clip
from .spec import SHIPPED_MODELS, ModelSpec, parse_spec


def _load_shipped(spec: ModelSpec, device: torch.device) -> LoadedClip:
    module, function = SHIPPED_MODELS[spec.name]
    return getattr(import_module(module, package=__package__), function)(device)


LOADERS: dict[str, Callable[[ModelSpec, torch.device], LoadedClip]] = {
    "zest": _load_shipped,
    "open_clip": load_open_clip,
    "hf-hub": load_open_clip,
    "local-dir": load_open_clip,
    "bento": load_bento_model,
}


def load_clip(spec: ModelSpec | str, device: torch.device) -> LoadedClip:
    """Build the model a spec names (a `ModelSpec`, or a spec string that is parsed first)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    return LOADERS[parsed.kind](parsed, device)
