"""The API worker's PIL + numpy transform gives open_clip's eval pixels, bit for bit, for every config zest serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from open_clip import pretrained
from PIL import Image

from zest.models.embedded.model import DEFAULT_PREPROCESS_CFG
from zest.models.images import to_rgb
from zest.models.pil_transform import PilEvalTransform
from zest.models.transform import eval_transform

PIXEL_KEYS = ("interpolation", "resize_mode", "mean", "std")


def _pretrained_cfgs() -> list[dict]:
    """One config per distinct (interpolation, resize_mode, mean, std) among open_clip's pretrained tags."""
    seen: dict[tuple, dict] = {}
    for arch, tag in pretrained.list_pretrained():
        cfg = pretrained.get_pretrained_cfg(arch, tag)
        key = tuple(str(cfg.get(k)) for k in PIXEL_KEYS)
        seen.setdefault(key, {k: cfg[k] for k in PIXEL_KEYS if cfg.get(k) is not None})
    return list(seen.values())


CFGS = {
    "vit-b-32": {"size": 224},  # open_clip's defaults: bicubic, shortest, OpenAI mean/std
    "siglip-squash": {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                      "resize_mode": "squash"},
    "zest-tiny": DEFAULT_PREPROCESS_CFG,
    "longest-fill": {"size": 64, "resize_mode": "longest", "fill_color": 128},
    "longest-bilinear": {"size": [48, 64], "resize_mode": "longest", "interpolation": "bilinear"},
    "shortest-non-square": {"size": [40, 64], "interpolation": "bilinear"},  # open_clip resizes bicubic here
    "squash-non-square": {"size": [64, 40], "resize_mode": "squash"},
    "random-interp": {"size": 32, "interpolation": "random"},
    **{f"pretrained-{i}": {"size": 64, **cfg} for i, cfg in enumerate(_pretrained_cfgs())},
}
# (width, height): landscape, portrait, tiny, much larger, odd sizes; the target sizes themselves are added per cfg
SHAPES = [(97, 61), (61, 97), (3, 5), (1, 1), (500, 333), (64, 64), (224, 224), (225, 223), (40, 64), (64, 48)]


def _image(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + size[0] * 7919 + size[1])
    w, h = size
    # smooth gradients plus noise: resampling filters see both edges and flat regions
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], axis=-1)
    arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        img = img.copy()
        img.putalpha(alpha)
        return img
    return img.convert(mode) if mode != "RGB" else img


def _assert_same(cfg: dict, img: Image.Image) -> None:
    ours = PilEvalTransform(cfg)(img)
    reference = eval_transform(cfg)(img).numpy()
    assert ours.dtype == np.float32 and ours.shape == reference.shape, (ours.shape, reference.shape)
    assert np.array_equal(ours, reference), float(np.abs(ours - reference).max())


@pytest.mark.parametrize("name", sorted(CFGS))
def test_pixels_equal_open_clips_transform(name):
    cfg = CFGS[name]
    size = cfg.get("size", 224)
    h, w = (size[0], size[1]) if isinstance(size, list) else (size, size)
    for shape in SHAPES + [(w, h), (h, w)]:
        _assert_same(cfg, _image(shape))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "1", "CMYK", "I;16"])
def test_other_modes_through_to_rgb_equal_open_clips_transform(mode):
    if mode == "I;16":
        img = Image.fromarray(np.arange(70 * 50, dtype=np.uint16).reshape(50, 70) * 13)  # I;16
    else:
        img = _image((70, 50), "RGBA" if mode == "LA" else mode)
        img = img.convert("LA") if mode == "LA" else img
    for name in ("vit-b-32", "siglip-squash", "zest-tiny", "longest-fill"):
        _assert_same(CFGS[name], to_rgb(img))


def test_not_rgb_input_follows_open_clips_order_resize_then_convert():
    """open_clip converts to RGB after resizing; so does the replica (the service always hands it RGB)."""
    for mode in ("L", "P"):
        _assert_same(CFGS["longest-fill"], _image((50, 30), mode))


@pytest.mark.parametrize("bad", [{"interpolation": "lanczos"}, {"resize_mode": "crop"}, {"mode": "L"},
                                 {"sizes": 3}, {"std": [0.5, 0.0, 0.5]}, {"mean": [0.5, 0.5]}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        PilEvalTransform(bad)


def test_importing_it_imports_no_model_library():
    code = ("import sys, zest.models.pil_transform; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'open_clip'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
