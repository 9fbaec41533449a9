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
from zest.models.runtimes import RUNTIMES, Runtime, check_fidelity


def _damaged(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A 'conversion' that quietly corrupts the weights, as a broken export or quantiser might."""
    broken = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in broken.parameters():
            p.add_(0.5 * p.std().nan_to_num() * torch.randn_like(p))
    return broken


def _identity(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return copy.deepcopy(model)


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
