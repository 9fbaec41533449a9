"""open_clip's eval transform in PIL + numpy, for the processes that run no model (the API worker).

Built from the same preprocess config as models/transform.py (open_clip's `image_transform_v2`, torchvision),
it gives the same float32 pixels: torchvision resizes a PIL image with PIL itself, so every step here is the
PIL call torchvision makes, then `/ 255` and `(x - mean) / std` in float32. tests/test_pil_transform.py checks
pixel equality against open_clip's transform. Imports neither torch nor open_clip.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# open_clip's PreprocessCfg defaults (open_clip/transform.py, OPENAI_DATASET_MEAN / _STD)
DEFAULTS: dict[str, Any] = {
    "size": 224, "mode": "RGB", "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711), "interpolation": "bicubic", "resize_mode": "shortest",
    "fill_color": 0,
}
# open_clip: 'bilinear' is bilinear, 'bicubic' and 'random' (a training choice) are bicubic at eval
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "random": Image.Resampling.BICUBIC,
             "bilinear": Image.Resampling.BILINEAR}
RESIZE_MODES = ("shortest", "longest", "squash")


def _hw(size: Any) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return (int(size[0]), int(size[0])) if len(size) == 1 else (int(size[0]), int(size[1]))
    return int(size), int(size)


def _triple(value: Any) -> tuple[float, float, float]:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * 3
    if len(values) != 3:
        raise ValueError(f"preprocess mean/std needs 3 values, got {value!r}")
    return values


def _resize(img: Image.Image, h: int, w: int, resample: Image.Resampling) -> Image.Image:
    """torchvision's `F.resize` on a PIL image: nothing when already (h, w), else PIL's own resize."""
    return img if img.size == (w, h) else img.resize((w, h), resample)


def _keep_ratio(img: Image.Image, target: tuple[int, int], longest: float) -> tuple[int, int]:
    """open_clip's `ResizeKeepRatio.get_params` at eval: the (h, w) that fits `target` by one edge."""
    w, h = img.size
    ratio_h, ratio_w = h / target[0], w / target[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(h / ratio), round(w / ratio)


def _crop_or_pad(img: Image.Image, target: tuple[int, int], fill: int) -> Image.Image:
    """torchvision's `center_crop` / open_clip's `center_crop_or_pad`: pad (centred) to at least `target`
    with `fill`, then crop the centre."""
    crop_h, crop_w = target
    w, h = img.size
    if crop_w > w or crop_h > h:
        border = ((crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0,
                  (crop_w - w + 1) // 2 if crop_w > w else 0, (crop_h - h + 1) // 2 if crop_h > h else 0)
        bands = len(img.getbands())
        padded = ImageOps.expand(img, border=border, fill=(int(fill),) * bands if bands > 1 else int(fill))
        if img.mode == "P":
            padded.putpalette(img.getpalette() or [])
        img = padded
        w, h = img.size
        if (w, h) == (crop_w, crop_h):
            return img
    top, left = round((h - crop_h) / 2.0), round((w - crop_w) / 2.0)
    return img.crop((left, top, left + crop_w, top + crop_h))


class PilEvalTransform:
    """PIL image -> (3, H, W) float32 array, open_clip's eval transform for `preprocess_cfg`
    (open_clip's `PreprocessCfg` fields; missing ones take open_clip's defaults)."""

    def __init__(self, preprocess_cfg: Mapping[str, Any]):
        unknown = set(preprocess_cfg) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown preprocess settings: {sorted(unknown)}")
        cfg = {**DEFAULTS, **{k: v for k, v in preprocess_cfg.items() if v is not None}}
        if cfg["mode"] != "RGB":
            raise ValueError(f"preprocess mode {cfg['mode']!r}: only RGB is supported (as in open_clip)")
        if cfg["interpolation"] not in _RESAMPLE:
            raise ValueError(f"preprocess interpolation {cfg['interpolation']!r}: one of {sorted(_RESAMPLE)}")
        if cfg["resize_mode"] not in RESIZE_MODES:
            raise ValueError(f"preprocess resize_mode {cfg['resize_mode']!r}: one of {RESIZE_MODES}")
        self.size = _hw(cfg["size"])
        self.resample = _RESAMPLE[cfg["interpolation"]]
        self.resize_mode = cfg["resize_mode"]
        self.fill = int(cfg["fill_color"])
        self.mean = np.asarray(_triple(cfg["mean"]), dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(_triple(cfg["std"]), dtype=np.float32).reshape(3, 1, 1)
        if not self.std.all():
            raise ValueError("preprocess std has a zero")

    def geometry(self, img: Image.Image) -> Image.Image:
        """Resize and crop/pad as open_clip's eval transform does, in the image's own mode."""
        target = self.size
        if self.resize_mode == "squash":
            return _resize(img, *target, self.resample)
        if self.resize_mode == "longest":
            return _crop_or_pad(_resize(img, *_keep_ratio(img, target, 1.0), self.resample), target, self.fill)
        if target[0] == target[1]:  # torchvision's Resize(int): the short edge to size, the long one truncated
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(target[0] * long / short)
            new_h, new_w = (new_long, target[0]) if w <= h else (target[0], new_long)
            img = _resize(img, new_h, new_w, self.resample)
        else:  # open_clip's ResizeKeepRatio(size) keeps its own default, bicubic, whatever the config says
            img = _resize(img, *_keep_ratio(img, target, 0.0), Image.Resampling.BICUBIC)
        return _crop_or_pad(img, target, 0)  # torchvision's CenterCrop pads with 0

    def __call__(self, img: Image.Image) -> np.ndarray:
        rgb = self.geometry(img).convert("RGB")
        x = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return (x - self.mean) / self.std
