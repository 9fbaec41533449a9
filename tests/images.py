"""Image bytes for the tests: a PIL image or a plain colour encoded as PNG (or JPEG, ...), and base64 for JSON."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

Color = str | int | tuple[int, ...]


def encode(img: Image.Image, format: str = "PNG", **save: Any) -> bytes:
    """`img` encoded as `format`, with PIL's save options (`quality=70`, `optimize=True`, `exif=...`)."""
    buf = io.BytesIO()
    img.save(buf, format, **save)
    return buf.getvalue()


def png(color: Color = "red", size: tuple[int, int] = (40, 40), mode: str = "RGB") -> bytes:
    """A plain `mode` image of one colour, as PNG bytes."""
    return encode(Image.new(mode, size, color))


def patched_png(color: str, size: tuple[int, int] = (50, 40)) -> bytes:
    """A `color` image with a white patch at (5, 5)-(20, 15), as PNG bytes: not one flat colour."""
    img = Image.new("RGB", size, color)
    img.paste("white", (5, 5, 20, 15))
    return encode(img)


def drawing(draw: Callable[[ImageDraw.ImageDraw], object], size: tuple[int, int] = (200, 200)) -> bytes:
    """A white image with `draw(ImageDraw.Draw(img))` applied (a plain PIL drawing of a shape), as PNG bytes."""
    img = Image.new("RGB", size, "white")
    draw(ImageDraw.Draw(img))
    return encode(img)


def decode(data: bytes) -> Image.Image:
    """`data` (PNG, JPEG, ...) opened as a PIL image."""
    return Image.open(io.BytesIO(data))


def b64(data: bytes) -> str:
    """`data` as the base64 text a JSON body carries."""
    return base64.b64encode(data).decode()
