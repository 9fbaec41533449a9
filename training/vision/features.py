"""Reading a folder's images and caching their features.

Each file is read once per run: its bytes are hashed (SHA-256) and decoded with the service's own decoder
(`models.images.decode_image`: EXIF rotation, transparency, 16-bit...). A file that does not decode is
listed with the reason and skipped -- never fatal.

Image features are cached on disk per model, keyed by the file's content hash, so evaluating or adapting
again (other templates, other labels, another method) encodes nothing. The cache file of a model is named
by its id and a fingerprint of its weights (the features of a fixed probe image), so retrained weights
under the same id never reuse stale features.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ...models.errors import InvalidInput
from ...models.images import decode_image
from .data import ImageFolder

# Local files are the user's own: limits well above the service's, still guarded against bombs.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)  # PIL's default when the user has unset it


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zest" / "features"


@dataclass
class ReadImage:
    index: int  # into folder.images
    digest: str
    data: bytes
    image: Image.Image | None  # None when not decoded (its features came from the cache)


@dataclass
class Skipped:
    path: str
    reason: str


def read_folder(folder: ImageFolder, known: AbstractSet[str] = frozenset(), skipped: list[Skipped] | None = None
                ) -> Iterator[ReadImage]:
    """Yield the folder's readable images in order; unreadable ones are appended to `skipped`.
    Files whose digest is in `known` are not decoded (image=None)."""
    skipped = [] if skipped is None else skipped
    for i, item in enumerate(folder.images):
        rel = folder.rel(item.path)
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            skipped.append(Skipped(rel, f"cannot read the file ({exc.strerror or exc})"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in known:
            yield ReadImage(i, digest, data, None)
            continue
        try:
            image = decode_image(data, max_bytes=MAX_FILE_BYTES, max_pixels=MAX_PIXELS, name=rel)
        except InvalidInput as exc:
            skipped.append(Skipped(rel, str(exc).removeprefix(f"{rel}: ")))
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one odd file must not end the run
            skipped.append(Skipped(rel, f"failed to decode ({type(exc).__name__}: {exc})"))
            continue
        yield ReadImage(i, digest, data, image)


def model_fingerprint(encoder) -> str:
    """Identifies the image tower's weights and preprocessing: features of a fixed probe image."""
    yy, xx = np.mgrid[0:64, 0:64]
    probe = Image.fromarray(np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).astype(np.uint8))
    feats = np.asarray(encoder.encode_images([probe]), dtype=np.float32)
    digest = hashlib.sha256(str(encoder.model_id).encode())
    digest.update(repr(sorted(dict(getattr(encoder, "preprocess_cfg", {})).items())).encode())
    digest.update(np.round(feats, 3).tobytes())
    return digest.hexdigest()[:16]


class FeatureCache:
    """digest -> feature vector of one model, in one .npz file under `directory`."""

    def __init__(self, directory: str | Path, model_id: str, fingerprint: str):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[:60] or "model"
        self.path = Path(directory) / f"{safe}-{fingerprint}.npz"
        self._rows: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path) as z:
                    self._rows = dict(zip(z["digests"].tolist(), z["features"]))
            except Exception:  # noqa: BLE001 - a damaged cache is a cache miss, not an error
                self._rows = {}

    def __contains__(self, digest: str) -> bool:
        return digest in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def keys(self) -> set[str]:
        return set(self._rows)

    def get(self, digest: str) -> np.ndarray:
        return self._rows[digest]

    def put(self, digest: str, feature: np.ndarray) -> None:
        self._rows[digest] = np.asarray(feature, dtype=np.float32)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp.npz")
        digests = list(self._rows)
        np.savez(tmp, digests=np.array(digests, dtype="U64"), features=np.stack([self._rows[d] for d in digests]))
        os.replace(tmp, self.path)
        self._dirty = False


@dataclass
class FolderFeatures:
    """Features of the readable images of a folder, in folder order."""

    features: np.ndarray  # (n, dim) float32, unit norm
    indices: np.ndarray  # (n,) into folder.images
    labels: np.ndarray  # (n,) class indices
    digests: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    encoded: int = 0  # how many were encoded this run (the rest came from the cache)


def progress_bar(total: int, desc: str, enabled: bool | None):
    """tqdm on stderr; `enabled=None` shows it only on a terminal."""
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=disable, leave=False)


def folder_features(folder: ImageFolder, encoder, cache: FeatureCache | None = None, batch_size: int = 32,
                    progress: bool | None = None) -> FolderFeatures:
    """Encode (or fetch from `cache`) every readable image of `folder`."""
    skipped: list[Skipped] = []
    known = cache.keys() if cache is not None else set()
    rows: dict[int, np.ndarray] = {}
    digests: dict[int, str] = {}
    pending: list[ReadImage] = []
    encoded = 0

    def flush(bar) -> None:
        nonlocal encoded
        if not pending:
            return
        feats = np.asarray(encoder.encode_images([p.image for p in pending]), dtype=np.float32)
        for p, f in zip(pending, feats):
            rows[p.index] = f
            if cache is not None:
                cache.put(p.digest, f)
        encoded += len(pending)
        bar.update(len(pending))
        pending.clear()

    with progress_bar(len(folder.images), "encoding images", progress) as bar:
        for item in read_folder(folder, known, skipped):
            digests[item.index] = item.digest
            if item.image is None:
                assert cache is not None  # an image comes back unread only when its features are cached
                rows[item.index] = cache.get(item.digest)
                bar.update(1)
                continue
            pending.append(item)
            if len(pending) >= batch_size:
                flush(bar)
        flush(bar)
        bar.update(len(skipped))
    if cache is not None:
        cache.save()
    order = sorted(rows)
    dim = int(getattr(encoder, "dim", 0))
    features = np.stack([rows[i] for i in order]) if order else np.zeros((0, dim), dtype=np.float32)
    return FolderFeatures(features=features, indices=np.array(order, dtype=np.int64),
                          labels=np.array([folder.images[i].label for i in order], dtype=np.int64),
                          digests=[digests[i] for i in order], skipped=skipped, encoded=encoded)
