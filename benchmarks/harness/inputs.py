"""Synthetic inputs: seeded photos-like images and their JPEG bytes."""

from __future__ import annotations

import io


def make_images(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list:
    """`n` distinct RGB PIL images, photo-like enough that JPEG sizes are realistic (smooth + noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(n):
        fx, fy, phase = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
        base = np.stack([np.sin(xx * fx + phase + c) * np.cos(yy * fy - c) for c in range(3)], axis=-1)
        pixels = (base * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def jpeg_bytes(image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
