"""A first start of auto / onnx exports and probes in a child process; the server loads only what serves."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zest.models import auto_runtime, onnx_runtime, runtime_child
from zest.models.clip_encoder import ClipEncoder

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["a cat", "a photo of a red car parked next to a tree"]
# a first start as the encoder service makes it, at 1 thread (not this machine's default: the child must take
# the server's count, not its own), in a process of its own: which libraries it holds is the point
SERVER = """
import json, logging, sys
import torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from zest.models.clip_encoder import ClipEncoder
enc = ClipEncoder.from_spec(sys.argv[1], device="cpu", runtime=sys.argv[2], cache_dir=sys.argv[3], child_timeout_s=300)
enc.release_torch_weights()
print(json.dumps({"runtime": enc.runtime, "choice": enc.auto_choice.to_json() if enc.auto_choice else None,
                  "modules": sorted(m for m in ("onnx", "onnxscript", "openvino", "onnxruntime") if m in sys.modules),
                  "texts": enc.encode_texts(json.loads(sys.argv[4])).tolist()}))
"""


def _first_start(spec: str, runtime: str, cache: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", SERVER, spec, runtime, str(cache), json.dumps(TEXTS)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _no_child(*args, **kwargs):
    pytest.fail("a child process was started")


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
def test_a_first_start_exports_in_a_child_and_the_server_holds_no_exporter(runtime, tiny_checkpoint, tmp_path,
                                                                           monkeypatch):
    spec = f"local-dir:{tiny_checkpoint}"
    first, log_text = _first_start(spec, runtime, tmp_path)
    assert "first start done in a child process" in log_text and "in this process instead" not in log_text
    assert {"onnx", "onnxscript"}.isdisjoint(first["modules"])  # the exporter stayed in the child
    chosen = first["choice"]["chosen"] if runtime == "auto" else "onnx"
    assert first["runtime"] == chosen and ("openvino" in first["modules"]) == (chosen == "openvino")
    assert sorted(f.name for f in tmp_path.rglob("*.onnx")) == ["image.onnx", "text.onnx"]
    if runtime == "auto":
        assert first["choice"]["in_child"] and f"chose {chosen}" in log_text and "in a child process]" in log_text
        (decision,) = tmp_path.rglob("auto/*/*.json")
        assert json.loads(decision.read_text())["key"]["threads"] == 1  # the server's thread count, not the child's
    # the same features as torch (what the in-process path serves: both pass the exact gate)
    reference = ClipEncoder.from_spec(spec, device="cpu")
    np.testing.assert_allclose(np.array(first["texts"]), reference.encode_texts(TEXTS), atol=1e-5)
    # a second start reuses the cache: no child, no export, no probe
    monkeypatch.setattr(runtime_child, "run_child", _no_child)
    monkeypatch.setattr(onnx_runtime, "_export", lambda *a, **k: pytest.fail("exported again"))
    monkeypatch.setattr(auto_runtime, "time_candidates", lambda *a, **k: pytest.fail("probed again"))
    if runtime == "auto":
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the decision's key
        try:
            again = ClipEncoder.from_spec(spec, device="cpu", runtime=runtime, cache_dir=tmp_path, child_timeout_s=300)
        finally:
            torch.set_num_threads(torch_threads)
        assert again.auto_choice.cached and not again.auto_choice.in_child
    else:
        again = ClipEncoder.from_spec(spec, device="cpu", runtime=runtime, cache_dir=tmp_path, child_timeout_s=300)
    assert again.runtime == chosen
    np.testing.assert_allclose(again.encode_texts(TEXTS), np.array(first["texts"]), atol=1e-6)


def _only_torch(monkeypatch):
    """auto with torch as its one candidate and a fixed time: the in-process path, cheaply."""
    monkeypatch.setattr(auto_runtime, "CANDIDATES", ("torch",))
    monkeypatch.setattr(auto_runtime, "time_candidates", lambda encoders, **k: {n: 1.0 for n in encoders})


@pytest.mark.parametrize("how", ["fails", "hangs"])
def test_a_child_that_fails_or_hangs_falls_back_to_the_in_process_path(how, tiny_checkpoint, tmp_path, monkeypatch,
                                                                       caplog):
    _only_torch(monkeypatch)
    code = "import sys; print('boom', file=sys.stderr); sys.exit(3)" if how == "fails" else "import time; time.sleep(60)"
    monkeypatch.setattr(runtime_child, "_command", lambda *a: [sys.executable, "-c", code])
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="zest.models"):
        encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="auto",
                                        cache_dir=tmp_path, child_timeout_s=1.0)
    assert time.monotonic() - t0 < 30
    assert encoder.runtime == "torch" and not encoder.auto_choice.in_child and not encoder.auto_choice.cached
    if how == "fails":  # the in-process path, as without a child: decided here and kept
        (warning,) = [r.getMessage() for r in caplog.records if "in this process instead" in r.getMessage()]
        assert "exited with status 3: boom" in warning
        assert encoder.auto_choice.candidates and list(tmp_path.rglob("auto/*/*.json"))
    else:  # not done again here, as slowly: torch serves, nothing is kept, the next start tries again
        (line,) = [r.getMessage() for r in caplog.records if "runtime auto for" in r.getMessage()]
        assert "chose torch (the child process timed out after 1 s" in line and "serving with torch" in line
        assert not encoder.auto_choice.candidates and not list(tmp_path.rglob("auto/*/*.json"))


def test_an_explicit_runtime_whose_child_times_out_serves_torch(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runtime_child, "_command", lambda *a: [sys.executable, "-c", "import time; time.sleep(60)"])
    with caplog.at_level(logging.ERROR, logger="zest.models"):
        encoder = ClipEncoder.from_spec(f"local-dir:{tiny_checkpoint}", device="cpu", runtime="onnx",
                                        cache_dir=tmp_path, child_timeout_s=0.5)
    assert (encoder.runtime, encoder.requested_runtime) == ("torch", "onnx")
    (line,) = [r.getMessage() for r in caplog.records if "runtime onnx refused" in r.getMessage()]
    assert "timed out after 0.5 s" in line and "serving with torch" in line
    assert not list(tmp_path.rglob("*.onnx"))


def test_random_weights_are_decided_in_process(tiny_arch, tmp_path, monkeypatch):
    _only_torch(monkeypatch)
    monkeypatch.setattr(runtime_child, "run_child", _no_child)
    encoder = ClipEncoder.from_spec(f"{tiny_arch}/random", device="cpu", runtime="auto", cache_dir=tmp_path,
                                    child_timeout_s=300)
    assert encoder.runtime == "torch" and not encoder.auto_choice.in_child


def test_the_child_runs_before_the_model_loads_unless_the_cache_may_hold_it(tmp_path, monkeypatch):
    """The two processes' peaks overlap only where the cache held this model for other weights or another machine."""
    events: list[str] = []
    prepared: list[bool] = []
    monkeypatch.setattr(runtime_child, "run_child", lambda *a: events.append("child"))
    monkeypatch.setattr(runtime_child, "is_prepared", lambda *a: prepared.pop(0))

    def load():
        events.append("load")
        return "encoder"

    def prepare(*answers: bool) -> tuple[object, bool, str | None]:
        events.clear()
        prepared[:] = answers
        return runtime_child.load_prepared(load, "zest-tiny", "auto", "auto", 32, tmp_path, 10.0)

    assert prepare(True) == ("encoder", True, None) and events == ["child", "load"]  # a first start
    (tmp_path / "auto" / "zest-tiny-0123").mkdir(parents=True)
    assert prepare(True) == ("encoder", False, None) and events == ["load"]  # a cached start
    assert prepare(False, True) == ("encoder", True, None) and events == ["load", "child"]  # other weights: overlap
    assert prepare(False, False) == ("encoder", False, None) and events == ["load", "child"]  # then in this process


def test_the_child_gets_the_servers_settings(tmp_path):
    command = runtime_child._command("zest-tiny", "auto", "fp32", 7, tmp_path)
    args = dict(zip(command[3::2], command[4::2]))
    assert command[1:3] == ["-m", "zest.models.runtime_prepare"]
    assert args["--threads"] == str(torch.get_num_threads()) and args["--batch-size"] == "7"
    assert (args["--spec"], args["--runtime"], args["--precision"], args["--cache-dir"]) == (
        "zest-tiny", "auto", "fp32", str(tmp_path))
    assert runtime_child._environment()["PYTHONPATH"].split(":")[0] == str(ROOT)  # this checkout's zest


def test_a_bento_tag_is_handed_to_the_child_as_its_directory_under_the_tags_id(tmp_path, monkeypatch):
    """The server resolves the tag in its own model store (a bento's, set in process): the child need not."""
    import importlib

    store = importlib.import_module("bentoml.models")  # the module itself (bentoml.models is a lazy proxy)

    class Stored:
        path, tag = str(tmp_path / "models" / "tiny-clip" / "abc123"), "tiny-clip:abc123"

    monkeypatch.setattr(store, "get", lambda name: Stored if name == "tiny-clip:latest" else None)
    command = runtime_child._command("tiny-clip:latest", "onnx", "auto", 32, tmp_path)
    args = dict(zip(command[3::2], command[4::2]))
    assert (args["--spec"], args["--model-id"]) == (f"local-dir:{Stored.path}", "tiny-clip:abc123")
    (tmp_path / "tiny-clip_abc123-0123").mkdir()  # an export of the resolved id: the cache may hold it
    assert runtime_child._maybe_cached(tmp_path, runtime_child._for_child("tiny-clip:latest")[1], "onnx")
