"""Labelled image folders: `DIR/<class folder>/**/<image file>`, with an optional `DIR/classes.yaml`.

Every sub-folder of DIR (hidden ones aside) is a class; every non-hidden file below it, at any depth, is
one of its images (whether it decodes is found out when it is read, see features.py). A class is named
after its folder with underscores as spaces (`golden_retriever` -> "golden retriever"), unless
`classes.yaml` says otherwise:

    golden_retriever: golden retriever dog          # folder: class name (the templates are applied to it)
    n01440764:
      name: tench
      prompts: ["a photo of a tench, a type of fish."]   # texts used as they are, instead of the templates

The held-out split (`holdout_split`) is stratified and seeded: the same folder, fraction and seed always
hold out the same images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from numpy.typing import ArrayLike

from ...models.errors import InvalidInput

CLASSES_FILE = "classes.yaml"


@dataclass(frozen=True)
class ClassInfo:
    folder: str
    name: str
    prompts: tuple[str, ...] = ()  # when given: the class's texts, instead of templates x name


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # index into ImageFolder.classes


@dataclass
class ImageFolder:
    root: Path
    classes: list[ClassInfo]
    images: list[LabelledImage]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def counts(self) -> list[int]:
        return np.bincount([i.label for i in self.images], minlength=len(self.classes)).tolist()

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_classes_yaml(root: Path, folders: Sequence[str]) -> dict[str, ClassInfo]:
    path = root / CLASSES_FILE
    if not path.is_file():
        return {}
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(spec, dict):
        raise InvalidInput(f"{path}: expected a mapping of folder -> class name (or {{name, prompts}})")
    out: dict[str, ClassInfo] = {}
    for folder, value in spec.items():
        folder = str(folder)
        name: object
        prompts: tuple[object, ...]
        if folder not in folders:
            raise InvalidInput(f"{path}: {folder!r} is not a class folder of {root} "
                               f"(folders: {', '.join(folders) or 'none'})")
        if isinstance(value, str):
            name, prompts = value, ()
        elif isinstance(value, dict) and set(value) <= {"name", "prompt", "prompts"}:
            name = value.get("name", folder.replace("_", " "))
            given = value.get("prompts", value.get("prompt", ()))
            prompts = (given,) if isinstance(given, str) else tuple(given or ())
            if not all(isinstance(p, str) and p.strip() for p in prompts):
                raise InvalidInput(f"{path}: {folder}: prompts must be non-empty strings")
        else:
            raise InvalidInput(f"{path}: {folder}: give a class name, or a mapping with 'name' and/or 'prompts'")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f"{path}: {folder}: the class name must be a non-empty string")
        out[folder] = ClassInfo(folder, " ".join(name.split()), tuple(str(p).strip() for p in prompts))
    return out


def load_image_folder(root: str | Path) -> ImageFolder:
    """Scan `root`; `InvalidInput` if it is not a usable image-folder tree."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory (expected one sub-folder of images per class)")
    root = root.resolve()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InvalidInput(f"{root} has no class folders: put each class's images in a sub-folder named after it")
    named = _read_classes_yaml(root, folders)
    classes = [named.get(f, ClassInfo(f, " ".join(f.replace("_", " ").split()) or f)) for f in folders]
    seen: dict[str, str] = {}
    for c in classes:
        if c.name in seen:
            raise InvalidInput(f"folders {seen[c.name]!r} and {c.folder!r} are both class {c.name!r}; "
                               f"name them apart in {CLASSES_FILE}")
        seen[c.name] = c.folder
    images = [LabelledImage(p, label) for label, c in enumerate(classes)
              for p in sorted((root / c.folder).rglob("*")) if p.is_file() and not _hidden(p, root)]
    if not images:
        raise InvalidInput(f"{root}: the class folders hold no files")
    return ImageFolder(root, classes, images)


def holdout_split(class_labels: ArrayLike, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): per class, round(fraction * n) images held out -- at least one and
    never all of them, so a class with n >= 2 images is in both parts; a class with 1 image trains only."""
    if not 0 < fraction < 1:
        raise InvalidInput(f"the held-out fraction must be between 0 and 1, got {fraction}")
    labels = np.asarray(class_labels)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(held), dtype=np.int64)
