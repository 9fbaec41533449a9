"""Model specs: one string names any model zest can load.

    zest-tiny                       a model zest ships (SHIPPED_MODELS below)
    ViT-B-32/laion2b_s34b_b79k      open_clip architecture / pretrained tag
    ViT-B-32/path/to/weights.pt     open_clip architecture / weights file
    ViT-B-32/random                 open_clip architecture, untrained (benchmarks, tests)
    hf-hub:ORG/NAME                 an open_clip model on the Hugging Face hub (or its local cache)
    local-dir:/path  or  /path      a directory with open_clip_config.json + weights
    NAME:VERSION  or  bento:NAME    a model in the BentoML model store (`zest models import` puts it there);
                                    bento:NAME[:VERSION] is the explicit form, bento:NAME the latest version

A BentoML tag is recognised by its shape: lower-case NAME:VERSION, both parts as BentoML allows
(letters, digits, '-', '_', '.'), NAME not a scheme zest knows. A bare NAME is never taken for a tag: it
would read the same as a mistyped zest model or architecture name, so the latest version is asked for
explicitly (bento:NAME or NAME:latest).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

RANDOM_WEIGHTS = "random"

# The models zest ships, by name -> (module relative to zest.models, loader function). Data: parsing a spec
# never imports a loader; models/factory.py resolves the entry when the model is built.
SHIPPED_MODELS: dict[str, tuple[str, str]] = {
    "zest-tiny": (".embedded.loader", "load_zest_tiny"),
}
BENTO_PREFIX = "bento:"
_SCHEMES = ("hf-hub", "local-dir", "bento")
_TAG_PART = r"[a-z0-9](?:[-._a-z0-9]{0,61}[a-z0-9])?"  # BentoML's tag name/version syntax, <= 63 chars
_TAG = re.compile(rf"({_TAG_PART})(?::({_TAG_PART}))?")


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "zest" | "hf-hub" | "local-dir" | "open_clip" | "bento"
    name: str  # zest model name, hub id, absolute directory, open_clip architecture, or BentoML tag
    pretrained: str | None = None  # open_clip only: tag, weights file, or "random"

    @property
    def model_id(self) -> str:
        """A stable, canonical identifier (used in responses and cache keys)."""
        if self.kind == "open_clip":
            return f"{self.name}/{self.pretrained}"
        if self.kind in ("zest", "bento"):
            return self.name
        return f"{self.kind}:{self.name}"


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or os.path.isdir(spec)


def bento_tag(spec: str) -> str | None:
    """The BentoML model tag `spec` names (NAME or NAME:VERSION), or None if it names something else
    (or is a malformed bento: spec, which `parse_spec` reports). Cheap, never raises: the service reads
    it at class definition to declare the model, so that `bentoml build` packs it."""
    spec = spec.strip()
    explicit = spec.startswith(BENTO_PREFIX)
    tag = spec[len(BENTO_PREFIX):] if explicit else spec
    match = _TAG.fullmatch(tag)
    if match is None or (not explicit and (match.group(2) is None or match.group(1) in _SCHEMES)):
        return None
    return tag


def parse_spec(spec: str) -> ModelSpec:
    """Turn a spec string into a `ModelSpec`, without loading anything."""
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec: pass e.g. 'zest-tiny' or 'ViT-B-32/laion2b_s34b_b79k'")
    if spec in SHIPPED_MODELS:
        return ModelSpec("zest", spec)
    if spec.startswith("hf-hub:"):
        hub_id = spec[len("hf-hub:"):]
        if hub_id.count("/") != 1:
            raise ModelLoadError(f"model spec {spec!r}: expected hf-hub:ORG/NAME")
        return ModelSpec("hf-hub", hub_id)
    if spec.startswith("local-dir:") or _looks_like_path(spec):
        path = Path(spec.removeprefix("local-dir:")).expanduser().resolve()
        return ModelSpec("local-dir", str(path))
    tag = bento_tag(spec)
    if tag is not None:
        return ModelSpec("bento", tag)
    if spec.startswith(BENTO_PREFIX):
        raise ModelLoadError(f"model spec {spec!r}: expected bento:NAME or bento:NAME:VERSION (a BentoML model tag: "
                             f"lower-case letters, digits, '-', '_' and '.')")
    arch, sep, pretrained = spec.partition("/")
    if not sep or not pretrained:
        raise ModelLoadError(
            f"model spec {spec!r} names no weights: use ARCH/TAG (e.g. ViT-B-32/laion2b_s34b_b79k), "
            f"ARCH/path/to/weights.pt, ARCH/{RANDOM_WEIGHTS} for untrained weights, hf-hub:ORG/NAME, "
            f"a local checkpoint directory, a BentoML model tag (NAME:VERSION, or bento:NAME for the latest), "
            f"or one of zest's models: {', '.join(sorted(SHIPPED_MODELS))}"
        )
    return ModelSpec("open_clip", arch, pretrained)
