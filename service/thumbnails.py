"""Thumbnails of a collection's image items (opt-in per collection: `"thumbnails": true` at creation).

A thumbnail is a small JPEG (longest side <= `MAX_SIDE` px, <= `MAX_BYTES` bytes) kept base64-encoded in the
item's own stored payload under `PAYLOAD_KEY`, so it follows the item through every store backend, persistence,
restarts and any dump of the payloads; it is never sent back in search results, only by
GET /collections/{name}/items/{id}/thumbnail.
"""

from __future__ import annotations

import base64
import binascii
import io

from PIL import Image

MAX_SIDE = 256
MAX_BYTES = 16 * 1024
PAYLOAD_KEY = "thumbnail"
_QUALITIES = (85, 75, 65, 50, 35)


def make_thumbnail(image: Image.Image) -> str:
    """The base64 JPEG of `image` within MAX_SIDE px and MAX_BYTES bytes (lower quality, then smaller, until
    it fits)."""
    side = MAX_SIDE
    while True:
        small = image.convert("RGB")
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in _QUALITIES:
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= MAX_BYTES or (quality == _QUALITIES[-1] and side <= 32):
                return base64.b64encode(buf.getvalue()).decode("ascii")
        side //= 2


def thumbnail_bytes(payload: dict) -> bytes | None:
    """The JPEG bytes a stored payload holds, or None."""
    data = payload.get(PAYLOAD_KEY)
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
