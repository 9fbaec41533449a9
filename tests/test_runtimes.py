"""CPU fast paths are admitted only through the fidelity gate; a failing one falls back to torch."""

from __future__ import annotations

import copy
import json
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


def test_a_sigmoid_model_keeps_its_logit_bias_once_the_torch_weights_are_dropped(tiny_checkpoint, extra_runtimes):
    """SigLIP's scoring is read from the logit bias (models/zero_shot.py): dropping the torch model must keep it."""
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="same")
    encoder.model.logit_bias = torch.nn.Parameter(torch.tensor([-10.0]))
    assert encoder.runtime == "same" and encoder.release_torch_weights() and encoder.model is None
    assert (encoder.logit_bias, encoder.scoring) == (-10.0, "sigmoid")


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


# -- ZEST_RUNTIME=auto (models/auto_runtime.py) -------------------------------------------------------------------

def test_auto_serves_the_fastest_exact_runtime_and_keeps_the_decision(tiny_checkpoint, tmp_path, monkeypatch,
                                                                      caplog):
    from zest.models import auto_runtime, onnx_runtime

    spec = f"local-dir:{tiny_checkpoint}"
    with caplog.at_level(logging.INFO, logger="zest.models.auto_runtime"):
        encoder = ClipEncoder.from_spec(spec, device="cpu", runtime="auto", cache_dir=tmp_path)
    choice = encoder.auto_choice
    assert encoder.requested_runtime == "auto" and encoder.runtime == choice.chosen
    everyone = {c.runtime: c for c in choice.candidates}
    assert set(everyone) == set(auto_runtime.CANDIDATES)
    timed = {n: c for n, c in everyone.items() if c.error != "not installed"}
    assert {"torch", "onnx"} <= set(timed) and all(c.passed and c.seconds > 0 for c in timed.values())
    assert all(c.cosine >= runtimes.EXACT_COSINE for c in timed.values())
    # the fastest, or a leaner one within the tolerance of it; each candidate's memory is measured
    fastest = min(timed.values(), key=lambda c: c.seconds)
    assert timed[choice.chosen].seconds <= fastest.seconds * (1 + auto_runtime.SPEED_TOLERANCE)
    assert choice.chosen == fastest.runtime or timed[choice.chosen].memory_mb < fastest.memory_mb
    assert all(c.memory_mb is not None for c in timed.values()) and timed["torch"].memory_mb > 0
    # one line that says what was picked, and each candidate's time and fidelity
    (line,) = [r.getMessage() for r in caplog.records if "runtime auto for" in r.getMessage()]
    assert f"chose {choice.chosen}" in line and all(f"{n} {timed[n].seconds * 1e3:.1f} ms" in line for n in timed)
    assert "cosine" in line and "probe" in line
    reference = ClipEncoder.from_spec(spec, device="cpu")
    texts = ["a cat", "a photo of a red car parked next to a tree"]
    np.testing.assert_allclose(encoder.encode_texts(texts), reference.encode_texts(texts), atol=1e-5)
    (decision,) = tmp_path.rglob("auto/*/*.json")
    assert json.loads(decision.read_text())["choice"]["chosen"] == choice.chosen

    # a second start on the same machine reads the decision: no timing, no export, the same runtime
    monkeypatch.setattr(auto_runtime, "time_candidates", lambda *a, **k: pytest.fail("probed again"))
    monkeypatch.setattr(onnx_runtime, "_export", lambda *a, **k: pytest.fail("exported again"))
    again = ClipEncoder.from_spec(spec, device="cpu", runtime="auto", cache_dir=tmp_path)
    assert again.runtime == choice.chosen and again.auto_choice.cached
    assert [c.seconds for c in again.auto_choice.candidates] == [c.seconds for c in choice.candidates]


@pytest.mark.parametrize("torch_s, onnx_s, chosen", [(1.0, 0.5, "onnx"), (0.5, 1.0, "torch")])
def test_auto_picks_by_the_probe_times(tiny_checkpoint, tmp_path, monkeypatch, torch_s, onnx_s, chosen):
    from zest.models import auto_runtime

    times = {"torch": torch_s, "onnx": onnx_s}
    monkeypatch.setattr(auto_runtime, "time_candidates", lambda encoders, **k: {n: times.get(n, 9.0) for n in encoders})
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="auto", cache_dir=tmp_path)
    assert encoder.runtime == chosen and encoder.auto_choice.chosen == chosen


@pytest.mark.parametrize("timed, chosen, why", [
    # openvino 5 % faster but holding twice the weights: a tie on speed, the leaner one serves
    ({"onnx": (0.53, 720.0), "openvino": (0.505, 1130.0)}, "onnx", "within 10% of the fastest (openvino)"),
    # clearly faster: speed wins
    ({"onnx": (0.60, 720.0), "openvino": (0.50, 1130.0)}, "openvino", "the fastest"),
    # the fastest is also the leanest
    ({"torch": (0.70, 605.0), "onnx": (0.50, 720.0)}, "onnx", "the fastest"),
    # memory not measured: the fastest
    ({"onnx": (0.53, None), "openvino": (0.505, None)}, "openvino", "the fastest"),
])
def test_auto_breaks_a_tie_on_speed_by_memory(timed, chosen, why):
    from zest.models.auto_runtime import Candidate, pick

    candidates = [Candidate(n, seconds=s, memory_mb=m, cosine=1.0, passed=True) for n, (s, m) in timed.items()]
    runtime, reason = pick(candidates)
    assert runtime == chosen and reason.startswith(why)


def test_auto_leaves_out_a_runtime_that_is_not_installed(tiny_checkpoint, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="auto", cache_dir=tmp_path)
    (openvino,) = [c for c in encoder.auto_choice.candidates if c.runtime == "openvino"]
    assert openvino.error == "not installed" and openvino.seconds is None and encoder.runtime in ("torch", "onnx")
    assert "openvino refused (not installed)" in encoder.auto_choice.summary()


@pytest.mark.parametrize("which", ["open_clip text transformer", "zest-tiny (HF MiniLM)"])
def test_openvino_runtime_is_exact_and_shares_the_onnx_export(which, tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from zest.models import onnx_runtime

    spec = f"local-dir:{tiny_checkpoint}" if which.startswith("open_clip") else "zest-tiny"
    reference = ClipEncoder.from_spec(spec, device="cpu")
    encoder = ClipEncoder.from_spec(spec, device="cpu", runtime="openvino", cache_dir=tmp_path)
    assert encoder.runtime == "openvino" and encoder.fidelity.cosine >= runtimes.EXACT_COSINE
    texts = ["a cat", "a photo of a red car parked next to a tree", "x"]
    np.testing.assert_allclose(encoder.encode_texts(texts), reference.encode_texts(texts), atol=1e-5)
    pixels = reference.preprocess(runtimes.probe_images(n=3))
    np.testing.assert_allclose(encoder.encode_pixels(pixels), reference.encode_pixels(pixels), atol=1e-5)
    # the onnx runtime serves the very same files: one export for both
    monkeypatch.setattr(onnx_runtime, "_export", lambda *a, **k: pytest.fail("exported twice"))
    assert ClipEncoder.from_spec(spec, device="cpu", runtime="onnx", cache_dir=tmp_path).runtime == "onnx"
    assert sorted(f.name for f in tmp_path.rglob("*.onnx")) == ["image.onnx", "text.onnx"]


def _noisy(encoder, cache_dir) -> Towers:
    """Close to fp32 but not equal to it (what a bf16 or int8 path gives): passes 0.999, fails the exact bar."""
    towers = Towers.of(encoder.model)

    def perturb(fn):
        def run(x):
            out = fn(x)
            return out + 0.01 * out.norm(dim=-1, keepdim=True) * torch.randn_like(out) / out.shape[-1] ** 0.5
        return run
    return Towers(perturb(towers.image), perturb(towers.text), None)


def _broken(encoder, cache_dir) -> Towers:
    raise RuntimeError("exporter crashed")


def test_auto_never_serves_an_inexact_or_failing_runtime(tiny_checkpoint, tmp_path, monkeypatch):
    from zest.models import auto_runtime

    monkeypatch.setitem(RUNTIMES, "noisy", Runtime("noisy", "test: approximately fp32", _noisy))
    monkeypatch.setitem(RUNTIMES, "broken", Runtime("broken", "test: cannot convert", _broken))
    monkeypatch.setattr(auto_runtime, "CANDIDATES", ("torch", "noisy", "broken"))
    # were they timed, both would win: they must not be timed at all
    monkeypatch.setattr(auto_runtime, "time_candidates", lambda encoders, **k: {n: 0.0 if n != "torch" else 9.0
                                                                                for n in encoders})
    encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="auto", cache_dir=tmp_path)
    assert encoder.runtime == "torch"
    by_name = {c.runtime: c for c in encoder.auto_choice.candidates}
    assert 0.999 <= by_name["noisy"].cosine < runtimes.EXACT_COSINE and not by_name["noisy"].passed
    assert "cosine" in by_name["noisy"].error and "exporter crashed" in by_name["broken"].error
    assert by_name["noisy"].seconds is None and by_name["broken"].seconds is None


def test_auto_decision_key_covers_the_machine_and_the_model(monkeypatch, tmp_path):
    from zest.models import auto_runtime

    key = auto_runtime.decision_key("m", "digest", threads=2)
    assert {"torch", "onnxruntime", "cpu", "cpu_flags", "threads", "weights", "model_id"} <= set(key)
    paths = {auto_runtime.decision_path(tmp_path, key),
             auto_runtime.decision_path(tmp_path, auto_runtime.decision_key("m", "digest", threads=4)),
             auto_runtime.decision_path(tmp_path, auto_runtime.decision_key("m", "other", threads=2))}
    monkeypatch.setattr(auto_runtime, "cpu_signature", lambda: {"cpu": "another CPU", "cpu_flags": "0"})
    paths.add(auto_runtime.decision_path(tmp_path, auto_runtime.decision_key("m", "digest", threads=2)))
    assert len(paths) == 4
    # a decision written for another key is not used
    path = auto_runtime.decision_path(tmp_path, key)
    auto_runtime._write_decision(path, key, auto_runtime.AutoChoice("onnx", "test"))
    assert auto_runtime._read_decision(path, key).chosen == "onnx"
    assert auto_runtime._read_decision(path, {**key, "threads": 8}) is None
    path.write_text("{not json")
    assert auto_runtime._read_decision(path, key) is None


def test_auto_on_cuda_keeps_torch_with_autocast(tiny_encoder, tmp_path):
    """The CUDA branch (no GPU here: the device is only relabelled, nothing runs on it)."""
    from zest.models import auto_runtime

    gpu = copy.copy(tiny_encoder)
    gpu.device, gpu._autocast_dtype = torch.device("cuda"), torch.bfloat16
    served = auto_runtime.choose(gpu, tmp_path)
    assert served is gpu and served.runtime == "torch" and served.requested_runtime == "auto"
    assert "bfloat16 autocast" in served.auto_choice.reason and served.auto_choice.candidates == []
    assert not any(tmp_path.iterdir())  # nothing exported or timed


def test_auto_is_the_served_default(monkeypatch):
    from zest.service.settings import Settings

    monkeypatch.delenv("ZEST_RUNTIME", raising=False)
    assert Settings.from_env().runtime == "auto"


def test_auto_server_shows_its_choice_in_metrics_and_log(tiny_checkpoint, rec_model_dir, tmp_path):
    import requests

    from benchmarks.harness.memory import tree_memory, zest_role
    from tests.server import running_server
    from zest.models import auto_runtime

    with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "srv", ZEST_RUNTIME="auto") as srv:
        metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
        log_text = srv.log(200_000)
        # what bench_peer records next to the speeds: every process of the tree, by role
        roles = sorted(p["role"] for p in tree_memory(srv.proc.pid, zest_role)["processes"])
    main = [r for r in roles if not r.startswith("other:")]  # helpers a library may start come and go
    assert main == ["api", "arbiter", "encoder", "recommender"], roles
    (info,) = [line for line in metrics.splitlines() if line.startswith("zest_runtime_info{")]
    assert 'requested="auto"' in info and 'device="cpu"' in info and info.endswith(" 1.0")
    chosen = info.split('chosen="')[1].split('"')[0]
    assert chosen in auto_runtime.CANDIDATES
    assert f"runtime auto for local-dir:{tiny_checkpoint} on cpu: chose {chosen}" in log_text
    assert any(line.startswith('zest_runtime_probe_seconds{') and 'runtime="onnx"' in line
               for line in metrics.splitlines())
    assert list((tmp_path / "srv" / "data" / "runtimes" / "auto").rglob("*.json"))


@pytest.mark.parametrize("runtime", ["onnx", "auto"])
def test_the_fp32_torch_model_is_freed_once_another_runtime_serves(runtime, tiny_checkpoint, tmp_path, monkeypatch):
    """The encoder service drops the torch weights an ONNX runtime no longer needs (its own copy serves)."""
    import gc
    import weakref

    from zest.models import auto_runtime

    monkeypatch.setattr(auto_runtime, "time_candidates",
                        lambda encoders, **k: {n: 0.5 if n == "onnx" else 1.0 for n in encoders})
    spec = f"local-dir:{tiny_checkpoint}"
    reference = ClipEncoder.from_spec(spec, device="cpu")
    assert not reference.release_torch_weights() and reference.model is not None  # torch serves: kept
    encoder = ClipEncoder.from_spec(spec, device="cpu", runtime=runtime, cache_dir=tmp_path)
    assert encoder.runtime == "onnx"
    model, scale, context = weakref.ref(encoder.model), encoder.logit_scale, encoder.context_length
    assert encoder.release_torch_weights() and encoder.model is None
    gc.collect()
    assert model() is None  # nothing else held on to the fp32 weights
    assert (encoder.logit_scale, encoder.context_length) == (scale, context)
    texts = ["a cat", "a photo of a red car parked next to a tree"]
    np.testing.assert_allclose(encoder.encode_texts(texts), reference.encode_texts(texts), atol=1e-5)
    pixels = reference.preprocess(runtimes.probe_images(n=2))
    np.testing.assert_allclose(encoder.encode_pixels(pixels), reference.encode_pixels(pixels), atol=1e-5)


def test_bf16_on_cpu_passes_the_gate_but_not_the_exact_bar(tiny_checkpoint, monkeypatch):
    """bf16 autocast is an approximation of fp32: admitted at 0.999, never exact (so auto never times it)."""
    from zest.models import auto_runtime, cpu_features
    from zest.service.pipeline import EncoderInfo

    monkeypatch.setattr(cpu_features, "native_bf16", lambda: True)  # its numbers do not depend on the hardware
    spec = f"local-dir:{tiny_checkpoint}"
    reference = ClipEncoder.from_spec(spec, device="cpu")
    candidate = reference.converted("bf16")
    assert candidate.runtime == "bf16" and candidate.model is reference.model  # the same weights, under autocast
    report = check_fidelity("bf16", reference, candidate)
    assert report.passed and report.cosine < runtimes.EXACT_COSINE
    assert not check_fidelity("bf16", reference, candidate, min_cosine=runtimes.EXACT_COSINE).passed
    assert "bf16" not in auto_runtime.CANDIDATES
    for served in (ClipEncoder.from_spec(spec, device="cpu", runtime="bf16"),
                   ClipEncoder.from_spec(spec, device="cpu", precision="bf16", runtime="auto")):
        assert (served.runtime, served.requested_runtime, served._autocast_dtype) == ("bf16", "bf16", None)
        assert served.fidelity.passed and served.auto_choice is None
        assert EncoderInfo.of(served).runtime == "bf16"  # what GET /info shows (zest_runtime_info: runtime, requested)
        assert not served.release_torch_weights() and served.model is not None  # bf16 runs the torch model
        pixels = reference.preprocess(runtimes.probe_images(n=2))
        out = served.encode_pixels(pixels)
        assert out.dtype == np.float32 and not np.array_equal(out, reference.encode_pixels(pixels))
        np.testing.assert_allclose(out, reference.encode_pixels(pixels), atol=0.05)


def test_bf16_is_refused_where_the_cpu_would_emulate_it(tiny_checkpoint, monkeypatch, caplog):
    from zest.models import cpu_features

    monkeypatch.setattr(cpu_features, "cpu_model_and_flags", lambda: ("a CPU without bf16", frozenset({"avx2"})))
    assert not cpu_features.native_bf16()
    spec = f"local-dir:{tiny_checkpoint}"
    with caplog.at_level(logging.ERROR, logger="zest.models.clip_encoder"):
        encoder = ClipEncoder.from_spec(spec, device="cpu", precision="bf16")
    assert (encoder.runtime, encoder.requested_runtime, encoder.precision) == ("torch", "bf16", "fp32")
    assert encoder._autocast_dtype is None  # fp32 serves, not emulated bf16
    (refused,) = [r.getMessage() for r in caplog.records if "runtime bf16 refused" in r.getMessage()]
    assert "no native bf16" in refused and "serving with torch" in refused
    monkeypatch.setattr(cpu_features, "cpu_model_and_flags", lambda: ("Zen 4", frozenset({"avx512f", "avx512_bf16"})))
    assert cpu_features.native_bf16()


def test_bf16_precision_on_cpu_cannot_combine_with_another_runtime(tiny_encoder):
    from zest.models.clip_encoder import autocast_dtype

    with pytest.raises(ModelLoadError, match="ZEST_RUNTIME to bf16"):
        ClipEncoder.from_spec("zest-tiny", device="cpu", precision="bf16", runtime="onnx")
    with pytest.raises(ModelLoadError, match="runtime bf16"):
        autocast_dtype(torch.device("cpu"), "bf16")  # never an ungated bf16 encoder on CPU
    gpu = copy.copy(tiny_encoder)
    gpu.device = torch.device("cuda")
    with pytest.raises(ModelLoadError, match="CPU only"):
        RUNTIMES["bf16"].convert(gpu, None)
