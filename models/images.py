"""Image decoding and colour normalisation, before the model's own preprocessing.

Every image reaches the model as 8-bit RGB in its display orientation: EXIF rotation applied,
transparency composited on white, 16-bit and float images scaled (not clipped) to 8 bits,
palette, grayscale and CMYK converted. Decoding enforces byte and pixel limits so a hostile
upload (truncated file, decompression bomb) is a clear error, never a crash.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput, PayloadTooLarge
from .limits import check_at_most

_WHITE = (255, 255, 255)


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit ("I;16*"), 32-bit int ("I") and float ("F") grayscale -> 8-bit "L", scaled by range."""
    arr = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if hi <= 1.0 and lo >= 0.0:
            scaled = arr * 255.0
        else:
            scaled = (arr - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        arr = arr.astype(np.float64)
        scaled = arr / 257.0 if arr.max(initial=0) > 255 else arr  # 16-bit data in a wide mode
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Return `img` as 8-bit RGB, upright per its EXIF orientation."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return _scale_to_8bit(img).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "1":
        img = img.convert("L")
    return img.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV, ...


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "image") -> Image.Image:
    """Decode untrusted bytes into an RGB image, or raise `InvalidInput` naming the problem."""
    if len(data) == 0:
        raise InvalidInput(f"{name}: empty file")
    check_at_most(len(data), max_bytes, f"{name}: {len(data)} bytes", "bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError as exc:
        raise InvalidInput(f"{name}: not a decodable image (supported: JPEG, PNG, GIF, WebP, BMP, TIFF)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{name}: image is too large to decode safely (decompression bomb)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{name}: corrupt image header ({exc})") from exc
    width, height = img.size
    check_at_most(width * height, max_pixels, f"{name}: {width}x{height} = {width * height} pixels", "pixels",
                  note="possible decompression bomb")
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: classify the first frame
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{name}: corrupt or truncated image ({exc})") from exc
    return to_rgb(img)
