"""Adapted classification heads: the format `zest adapt` writes and the service applies.

A head maps the L2-normalised image features of **one** model to scores over its own classes:

    logits = logit_scale · f·Wᵀ + b  +  α · exp(−β · (1 − f·Kᵀ)) · onehot(V)

* `W` (C×D) and `b` (C): a linear head. It starts as the zero-shot class embeddings (b = 0), so a head
  with nothing learned *is* the zero-shot classifier.
* `K` (N×D), `V` (N): an optional Tip-Adapter cache (Zhang et al., 2022) of the training images' features
  and their class indices; `α` weighs it against the linear term, `β` sets how sharply a key must match.

How the numbers are chosen is training's business (zest.training.vision.adapt); this module only holds,
checks, stores and applies them, and imports nothing of training.

On disk a head is a directory: `head.json` (format, name, classes, model id, dimension, logit scale, α, β,
method, held-out metrics and other metadata) and `head.safetensors` (`weight`, `bias` and, with a cache,
`cache_keys`, `cache_labels`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Conflict, ModelLoadError, NotFound
from .zero_shot import softmax, top_k

HEAD_FORMAT = "zest-head/1"
META_FILE = "head.json"
WEIGHTS_FILE = "head.safetensors"
# A head's name is also its BentoML model name: the same rule as a BentoML tag's name.
NAME_RE = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")
NAME_MAX = 63


def check_name(name: object) -> str:
    """`name`, or ValueError saying what a head name may be."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > NAME_MAX:
        raise ValueError(f"head name {name!r} is invalid: use at most {NAME_MAX} lowercase letters, digits, "
                         "'-', '_' or '.', starting and ending with a letter or digit")
    return name


def is_head_path(ref: str) -> bool:
    """Whether a head reference (ZEST_HEADS entry, --head) is a directory rather than a BentoML model tag:
    it holds a head.json, or it has a '/' (which no tag has). A bare name is a tag even if a directory of
    that name happens to exist in the working directory."""
    return "/" in ref or os.sep in ref or (Path(ref) / META_FILE).is_file()


def head_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, logit_scale: float,
                cache_keys: np.ndarray | None = None, cache_labels: np.ndarray | None = None,
                alpha: float = 0.0, beta: float = 1.0) -> np.ndarray:
    """The head's logits (n, C) for unit-norm `features` (n, D) -- the formula in the module docstring."""
    f = np.asarray(features, dtype=np.float32)
    logits = logit_scale * (f @ weight.T) + bias
    if cache_keys is not None and len(cache_keys) and alpha:
        affinity = np.exp(-beta * (1.0 - f @ cache_keys.T))  # (n, N), in [e^{-2β}, 1]
        values = np.zeros((len(cache_keys), weight.shape[0]), dtype=np.float32)
        values[np.arange(len(cache_keys)), cache_labels] = 1.0
        logits = logits + alpha * (affinity @ values)
    return logits.astype(np.float32)


@dataclass(frozen=True, eq=False, kw_only=True)
class HeadParams:
    """A head's numbers -- W, b, the logit scale and the optional Tip-Adapter cache with α and β -- and how they
    apply (the formula in the module docstring). What `zest adapt` fits (zest.training.vision.adapt.Fitted)
    and what a served `Head` holds are both these."""

    weight: np.ndarray
    bias: np.ndarray
    logit_scale: float
    cache_keys: np.ndarray | None = None
    cache_labels: np.ndarray | None = None
    alpha: float = 0.0
    beta: float = 1.0

    def logits(self, features: np.ndarray) -> np.ndarray:
        return head_logits(features, self.weight, self.bias, self.logit_scale, self.cache_keys, self.cache_labels,
                           self.alpha, self.beta)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Softmax over the classes, float64."""
        return softmax(self.logits(features).astype(np.float64))


@dataclass(frozen=True, eq=False)
class Head(HeadParams):
    """A loaded head: its numbers (`HeadParams`) for one model's features and named classes. `meta` carries
    everything else from head.json (method, metrics, data summary...)."""

    name: str
    classes: tuple[str, ...]
    model_id: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # where it was loaded from: a BentoML tag or a directory

    def __post_init__(self) -> None:
        check_name(self.name)
        classes = tuple(self.classes)
        if not classes or any(not isinstance(c, str) or not c.strip() for c in classes):
            raise ValueError("a head needs at least one class, each a non-empty string")
        if len(set(classes)) != len(classes):
            raise ValueError("a head's class names must be unique")
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ValueError("a head must name the model id it was made for")
        weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        bias = np.ascontiguousarray(self.bias, dtype=np.float32)
        if weight.ndim != 2 or weight.shape[0] != len(classes) or bias.shape != (len(classes),):
            raise ValueError(f"weight must be ({len(classes)}, dim) and bias ({len(classes)},); got "
                             f"{weight.shape} and {bias.shape}")
        keys, labels = self.cache_keys, self.cache_labels
        if (keys is None) != (labels is None):
            raise ValueError("cache_keys and cache_labels come together")
        if keys is not None:
            keys = np.ascontiguousarray(keys, dtype=np.float32)
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            if keys.ndim != 2 or keys.shape[1] != weight.shape[1] or labels.shape != (len(keys),):
                raise ValueError(f"cache_keys must be (n, {weight.shape[1]}) with n cache_labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise ValueError("cache_labels must be class indices")
        numbers = [weight, bias] + ([keys] if keys is not None else [])
        if not all(np.isfinite(a).all() for a in numbers) or not all(
                math.isfinite(x) for x in (self.logit_scale, self.alpha, self.beta)):
            raise ValueError("a head's numbers must be finite")
        for name, value in (("classes", classes), ("weight", weight), ("bias", bias), ("cache_keys", keys),
                            ("cache_labels", labels), ("logit_scale", float(self.logit_scale)),
                            ("alpha", float(self.alpha)), ("beta", float(self.beta)), ("meta", dict(self.meta))):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "linear" if self.cache_keys is None else "tip-adapter"))

    def check_model(self, model_id: str, dim: int | None = None) -> None:
        """Conflict (409) unless this head was made for `model_id` (features of `dim` dimensions)."""
        if model_id != self.model_id:
            raise Conflict(f"head {self.name!r} was made for model {self.model_id!r}, but this server runs "
                           f"model {model_id!r}: adapt it again with --model {model_id}, or serve "
                           f"ZEST_MODEL={self.model_id}")
        if dim is not None and dim != self.dim:
            raise Conflict(f"head {self.name!r} expects {self.dim}-d features; model {model_id!r} gives {dim}-d")

    def logits(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be (n, {self.dim}), got {features.shape}")
        return super().logits(features)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return super().probabilities(features).astype(np.float32)

    def predict(self, features: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class, probability) per image, most probable first."""
        return top_k(self.probabilities(features), list(self.classes), k)

    def summary(self) -> dict:
        """What GET /heads shows: everything but the arrays and the per-image lists."""
        meta = {k: v for k, v in self.meta.items() if k not in ("train_images",)}
        return {"name": self.name, "source": self.source, "model_id": self.model_id, "classes": list(self.classes),
                "method": self.method, "metrics": meta.get("metrics", {}), "created": meta.get("created"),
                "cache_size": 0 if self.cache_keys is None else len(self.cache_keys)}


def save_head(head: Head, directory: str | Path) -> Path:
    """Write `head` as `directory`/head.json + head.safetensors; return the directory."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": head.weight, "bias": head.bias}
    if head.cache_keys is not None and head.cache_labels is not None:
        tensors |= {"cache_keys": head.cache_keys, "cache_labels": head.cache_labels}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    meta = {**head.meta, "format": HEAD_FORMAT, "name": head.name, "classes": list(head.classes),
            "model_id": head.model_id, "dim": head.dim, "logit_scale": head.logit_scale,
            "alpha": head.alpha, "beta": head.beta}
    (directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return directory


def load_head(directory: str | Path, source: str | None = None) -> Head:
    """Read a head directory; `ModelLoadError` naming the directory if it is not a valid head."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    where = source or str(directory)
    try:
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format") != HEAD_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {HEAD_FORMAT!r}")
        tensors = load_file(str(directory / WEIGHTS_FILE))
        known = {"format", "name", "classes", "model_id", "dim", "logit_scale", "alpha", "beta"}
        head = Head(name=meta["name"], classes=tuple(meta["classes"]), model_id=meta["model_id"],
                    weight=tensors["weight"], bias=tensors["bias"], logit_scale=meta["logit_scale"],
                    cache_keys=tensors.get("cache_keys"), cache_labels=tensors.get("cache_labels"),
                    alpha=meta.get("alpha", 0.0), beta=meta.get("beta", 1.0),
                    meta={k: v for k, v in meta.items() if k not in known}, source=where)
        if meta.get("dim", head.dim) != head.dim:
            raise ValueError(f"head.json says dim {meta['dim']}, the weights are {head.dim}-d")
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{where} is not a zest head: {Path(exc.filename).name} is missing "
                             "(make one with `zest adapt`)") from None
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{where} is not a valid zest head: {exc}") from None
    return head


class Heads:
    """The heads a server has loaded, by name."""

    def __init__(self, heads: Iterable[Head] = ()):
        self._heads: dict[str, Head] = {}
        for head in heads:
            if head.name in self._heads:
                raise ModelLoadError(f"two heads are named {head.name!r} ({self._heads[head.name].source} and "
                                     f"{head.source}): load one version of each head")
            self._heads[head.name] = head

    def __iter__(self) -> Iterator[Head]:
        return iter(self._heads.values())

    def __len__(self) -> int:
        return len(self._heads)

    @property
    def names(self) -> list[str]:
        return list(self._heads)

    def get(self, name: object) -> Head:
        """The head called `name`, or NotFound (404) listing the loaded ones."""
        if not isinstance(name, str) or name not in self._heads:
            loaded = ", ".join(self._heads) or "none (set ZEST_HEADS)"
            raise NotFound(f"no head named {name!r} is loaded; loaded heads: {loaded}")
        return self._heads[name]

    def for_model(self, name: object, model_id: str, dim: int | None = None) -> Head:
        head = self.get(name)
        head.check_model(model_id, dim)
        return head


def load_heads(directories: Sequence[tuple[str | Path, str]]) -> Heads:
    """`Heads` from (directory, source) pairs."""
    return Heads(load_head(d, source) for d, source in directories)
