"""models/memory.py: freed heap memory goes back to the OS, and the encoder gives back its torch weights."""

from __future__ import annotations

import platform

import pytest

from zest.models.memory import release_freed, rss_mb

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc
def test_release_freed_returns_a_freed_heap_to_the_os():
    # 300 MB in 64 KB blocks: under glibc's mmap threshold, so they live in the heap and stay after `del`
    blocks = [bytearray(64 * 1024) for _ in range(4800)]
    held = rss_mb()
    del blocks
    assert release_freed()
    assert held - rss_mb() > 200


def test_rss_is_this_process():
    assert 10 < rss_mb() < 100_000


@glibc
def test_an_encoder_on_onnx_gives_back_its_torch_weights(tiny_checkpoint, tmp_path):
    from zest.models.clip_encoder import ClipEncoder

    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="onnx",
                                    cache_dir=tmp_path)
    weights = sum(p.numel() * p.element_size() for p in encoder.model.parameters()) / 2**20
    before = rss_mb()
    assert encoder.release_torch_weights()
    assert before - rss_mb() > 0.5 * weights
    assert encoder.encode_texts(["a cat"]).shape == (1, encoder.dim)
