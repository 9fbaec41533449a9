"""CPU fast paths are admitted only through the fidelity gate; a failing one falls back to torch."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from zest.models import runtimes
from zest.models.clip_encoder import ClipEncoder
from zest.models.errors import ModelLoadError
from zest.models.runtimes import RUNTIMES, Runtime, Towers, check_fidelity


def _damaged(encoder, cache_dir) -> Towers:
    """A 'conversion' that quietly corrupts the weights, as a broken export or quantiser might."""
    broken = copy.deepcopy(encoder.model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in broken.parameters():
            p.add_(0.5 * p.std().nan_to_num() * torch.randn_like(p))
    return Towers.of(broken)


def _identity(encoder, cache_dir) -> Towers:
    return Towers.of(copy.deepcopy(encoder.model))


@pytest.fixture()
def extra_runtimes(monkeypatch):
    monkeypatch.setitem(RUNTIMES, "damaged", Runtime("damaged", "test: corrupts weights", _damaged))
    monkeypatch.setitem(RUNTIMES, "same", Runtime("same", "test: an exact copy", _identity))


def test_gate_refuses_a_damaged_conversion_and_serves_with_torch(tiny_checkpoint, extra_runtimes, caplog):
    with caplog.at_level(logging.ERROR, logger="zest.models.clip_encoder"):
        encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="damaged")
    assert encoder.runtime == "torch"
    refused = [r for r in caplog.records if "runtime damaged refused" in r.getMessage()]
    assert len(refused) == 1 and "fidelity gate" in refused[0].getMessage()
    reference = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu")
    np.testing.assert_allclose(encoder.encode_texts(["a cat"]), reference.encode_texts(["a cat"]), atol=1e-6)


def test_gate_admits_a_faithful_conversion(tiny_checkpoint, extra_runtimes):
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="same")
    assert encoder.runtime == "same" and encoder.fidelity.passed
    assert encoder.fidelity.top1_agreement == 1.0 and encoder.fidelity.min_image_cosine > 0.9999


def test_fidelity_report_numbers(tiny_encoder):
    report = check_fidelity("self", tiny_encoder, tiny_encoder)
    assert report.passed and report.min_text_cosine == pytest.approx(1.0, abs=1e-5)


def test_int8_runs_quantised_linears_and_is_gated(tiny_encoder, tiny_checkpoint):
    quantized = runtimes._quantize_linear_int8(tiny_encoder.model, torch.device("cpu"))
    dynamic = [m for m in quantized.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) >= 4  # the transformer blocks' MLPs and projections are int8 now
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="int8")
    assert encoder.runtime in ("int8", "torch")  # admitted or refused by the gate, never an error
    assert encoder.encode_texts(["a cat"]).shape == (1, encoder.dim)


def test_unknown_runtime_and_int8_on_gpu_are_clear_errors(tiny_encoder):
    with pytest.raises(ModelLoadError, match="unknown runtime 'tensorrt'"):
        runtimes.get_runtime("tensorrt")
    with pytest.raises(ModelLoadError, match="CPU only"):
        runtimes._quantize_linear_int8(tiny_encoder.model, torch.device("cuda"))


@pytest.mark.parametrize("which", ["open_clip text transformer", "zest-tiny (HF MiniLM)"])
def test_onnx_runtime_is_exact_and_converted_once(which, tiny_checkpoint, tmp_path, monkeypatch):
    """ONNX Runtime serves both kinds of towers (a ViT; a causal open_clip text transformer or a Hugging Face
    text tower, cut to each batch's longest sequence) with torch's features; the export is kept on disk and a
    second start reads it instead of exporting again."""
    from zest.models import onnx_runtime

    spec = f"local-dir:{tiny_checkpoint}" if which.startswith("open_clip") else "zest-tiny"
    reference = ClipEncoder.from_spec(spec, device="cpu")
    encoder = ClipEncoder.from_spec(spec, device="cpu", runtime="onnx", cache_dir=tmp_path)
    assert encoder.runtime == "onnx" and encoder.fidelity.passed
    texts = ["a cat", "a photo of a red car parked next to a tree", "x"]
    np.testing.assert_allclose(encoder.encode_texts(texts), reference.encode_texts(texts), atol=1e-5)
    pixels = reference.preprocess(runtimes.probe_images(n=3))
    np.testing.assert_allclose(encoder.encode_pixels(pixels), reference.encode_pixels(pixels), atol=1e-5)
    files = sorted(tmp_path.rglob("*.onnx"))
    assert [f.name for f in files] == ["image.onnx", "text.onnx"]
    assert files[0].parent.name.startswith("onnx-v") and spec[-9:] in files[0].parent.parent.name

    exports = []
    monkeypatch.setattr(onnx_runtime, "_export", lambda *a, **k: exports.append(a))
    again = ClipEncoder.from_spec(spec, device="cpu", runtime="onnx", cache_dir=tmp_path)
    assert again.runtime == "onnx" and exports == []  # read from the cache, not exported again
    np.testing.assert_allclose(again.encode_texts(texts), encoder.encode_texts(texts), atol=1e-6)


def test_a_damaged_onnx_cache_falls_back_to_torch(tiny_checkpoint, tmp_path, caplog):
    spec = f"local-dir:{tiny_checkpoint}"
    ClipEncoder.from_spec(spec, device="cpu", runtime="onnx", cache_dir=tmp_path)
    image = next(tmp_path.rglob("image.onnx"))
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # e.g. a disk that filled up
    with caplog.at_level(logging.ERROR, logger="zest.models.clip_encoder"):
        encoder = ClipEncoder.from_spec(spec, device="cpu", runtime="onnx", cache_dir=tmp_path)
    assert encoder.runtime == "torch"
    assert len([r for r in caplog.records if "runtime onnx refused" in r.getMessage()]) == 1


def test_onnx_int8_is_gated_and_onnx_refuses_gpu(tiny_encoder, tiny_checkpoint, tmp_path):
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="onnx-int8",
                                    cache_dir=tmp_path)
    assert encoder.runtime in ("onnx-int8", "torch")  # admitted or refused by the gate, never an error
    assert encoder.encode_texts(["a cat"]).shape == (1, encoder.dim)
    assert sorted(f.name for f in tmp_path.rglob("*.onnx")) == ["image.onnx", "text.onnx"]  # no fp32 left behind
    gpu = copy.copy(tiny_encoder)
    gpu.device = torch.device("cuda")
    with pytest.raises(ModelLoadError, match="CPU only"):
        RUNTIMES["onnx"].convert(gpu, tmp_path)
