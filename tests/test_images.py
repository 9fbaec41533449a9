
import numpy as np
import pytest
from PIL import Image

from tests.images import encode
from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.models.images import decode_image, to_rgb

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 4_000_000}


def test_modes_become_rgb():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white background
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 255))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("L", (4, 4), 128)).getpixel((0, 0)) == (128, 128, 128)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255] * 256)
    assert to_rgb(pal).getpixel((0, 0)) == (0, 0, 255)
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped
    mid16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert to_rgb(mid16).getpixel((0, 0)) == (128, 128, 128)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(img, format="JPEG", exif=exif.tobytes())
    assert decode_image(data, **LIMITS).size == (20, 40)


def test_16bit_png_decodes():
    data = encode(Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)))
    assert decode_image(data, **LIMITS).getpixel((0, 0)) == (255, 255, 255)


def test_not_an_image():
    with pytest.raises(InvalidInput, match="not a decodable image"):
        decode_image(b"hello, this is text", **LIMITS)
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", **LIMITS)


def test_truncated_image():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_too_many_bytes():
    data = encode(Image.new("RGB", (8, 8)))
    with pytest.raises(PayloadTooLarge, match="over the limit"):
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**6)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("L", (5000, 5000)), optimize=True)  # ~25 MPixel in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge, match="decompression bomb"):
        decode_image(bomb, **LIMITS)
