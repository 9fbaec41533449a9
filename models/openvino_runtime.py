"""OpenVINO fast path (``ZEST_RUNTIME=openvino``, and a candidate of ``auto`` where openvino is installed).

It compiles the fp32 ONNX export of models/onnx_runtime.py (the same files ``onnx`` serves: nothing is exported
twice) with OpenVINO's CPU plugin at fp32 inference precision — on CPUs with BF16 or AMX the plugin's default
would be bf16, which is not exact. Dynamic batch and sequence dimensions are kept, so text is still cut to each
batch's longest sequence. Optional: ``pip install 'zest[openvino]'``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .errors import ModelLoadError


class OvTower:
    """Runs one exported tower in OpenVINO: a torch tensor in, a float32 torch tensor out (CPU). One inference at
    a time (an infer request is not thread-safe; the encoder runs one forward pass at a time anyway)."""

    def __init__(self, path: Path):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
                  "INFERENCE_NUM_THREADS": str(torch.get_num_threads())}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy())})
            out = np.array(self.request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused
        return torch.from_numpy(out)


def convert(model: torch.nn.Module, device: torch.device, cache_root: Path | None, *, image_size: tuple[int, int],
            context_length: int, model_id: str):
    """(image, text, text_trimmed or None) run by OpenVINO, from the `onnx` runtime's cached fp32 export."""
    import contextlib
    import tempfile

    from . import onnx_runtime

    if device.type != "cpu":
        raise ModelLoadError(f"runtime openvino runs on CPU only (device is {device}); use torch on GPU")
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ModelLoadError("runtime openvino needs openvino: pip install 'zest[openvino]'") from None
    with contextlib.ExitStack() as stack:
        if cache_root is None:
            cache_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zest-openvino-")))
        directory = onnx_runtime.cache_dir(cache_root, model_id, model, "onnx")
        image, text, trimmable = onnx_runtime.export_towers(model, directory, False, image_size, context_length)
        image_tower, text_tower = OvTower(image), OvTower(text)
    return image_tower, text_tower, text_tower if trimmable else None
