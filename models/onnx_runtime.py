"""ONNX Runtime fast paths for a loaded CLIP model (``ZEST_RUNTIME=onnx`` and ``onnx-int8``).

Both towers are exported to ONNX once per model and kept on disk; a later start with the same weights, the
same runtime and the same library versions loads the files instead of exporting again:

    <cache>/<model id>-<weights digest>/<runtime>-v<export version>-ort<version>-torch<version>/{image,text}.onnx

* ``onnx`` runs the exported fp32 graphs in ONNX Runtime (its fused CPU kernels; features equal torch's to
  ~1e-6).
* ``onnx-int8`` also quantises the weights of every MatMul/Gemm to int8 per output channel (ONNX Runtime
  dynamic quantisation: activations are quantised per batch at run time, with the CPU's VNNI int8 dot
  products where it has them).

The text tower is exported with a dynamic sequence length when it can be run cut to the longest sequence of
a batch (models/text_tower.py), so both paths keep that saving. Whatever is exported still has to pass the
fidelity gate in models/runtimes.py before it serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelLoadError
from .text_tower import trimmed_text_encoder

log = logging.getLogger(__name__)

# bump when the export or quantisation changes: it is part of the cache key, so old files are not reused
EXPORT_VERSION = 1
OPSET = 18  # the lowest the torch.export-based exporter writes without a (lossy, noisy) version conversion


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes, bytes): the cache key for the model's weights."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def slug(model_id: str) -> str:
    """`model_id` as a file name (its end: the end of a path says most)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")[-80:]


def cache_dir(root: Path, model_id: str, model: torch.nn.Module, runtime: str) -> Path:
    import onnxruntime

    return (Path(root) / f"{slug(model_id)}-{weights_digest(model)}"
            / f"{runtime}-v{EXPORT_VERSION}-ort{onnxruntime.__version__}-torch{torch.__version__.split('+')[0]}")


class _Tower(torch.nn.Module):
    """One tower of the model as a module with a single tensor input (what the exporter traces). The model is
    a submodule, so that its weights are traced as the graph's parameters."""

    def __init__(self, model: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same directory, so a crash never leaves a half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(model: torch.nn.Module, fn, example: torch.Tensor, path: Path, dynamic: dict[int, str]) -> None:
    """torch.export -> ONNX (the exporter that keeps the sequence length dynamic through attention; the
    TorchScript one bakes the example's length into the attention reshapes)."""
    dims = {axis: torch.export.Dim(name, min=1 if name == "n" else 2, max=65536 if name == "n" else 4096)
            for axis, name in dynamic.items()}

    def write(tmp: Path) -> None:
        onnxscript_log = logging.getLogger("onnxscript")
        level = onnxscript_log.level
        onnxscript_log.setLevel(logging.ERROR)  # its optimiser's notes on ops it leaves as they are
        # with autograd on: PyTorch's fused inference kernel for nn.MultiheadAttention (taken under no_grad)
        # is not what should be exported; the plain attention it falls back to is
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(_Tower(model, fn).eval(), (example,), str(tmp), input_names=["input"],
                                  output_names=["output"], dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True,
                                  optimize=True, verbose=False, external_data=False)
        finally:
            onnxscript_log.setLevel(level)

    _write_atomically(path, write)


class _DropPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantiser logs (`logging.warning`, on the root logger) advice to run its shape
    pre-processing first, which changes nothing for MatMul-only dynamic quantisation: keep it out of zest's log."""
    hint = _DropPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(tmp: Path) -> None:
        with _quiet_quantizer():
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})

    _write_atomically(dst, write)


class OrtTower:
    """Runs one exported tower: a torch tensor in, a float32 torch tensor out (CPU)."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the cores torch would use (ZEST / OMP settings)
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: the API process decodes and preprocesses on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # no arena: ORT's arena keeps the largest batch's activations for good (ViT-B-32 at 32 images: ~350 MB);
        # without it each run's buffers go back to malloc, at no measured cost in speed (benchmarks/README.md)
        options.enable_cpu_mem_arena = False
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.detach().cpu().numpy())})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def _text_fn(model: Any) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """The text function to export and whether it accepts batches cut to their longest sequence."""
    trimmed = trimmed_text_encoder(model)
    return (trimmed, True) if trimmed is not None else (model.encode_text, False)


def export_towers(model: torch.nn.Module, directory: Path, int8: bool, image_size: tuple[int, int],
                  context_length: int) -> tuple[Path, Path, bool]:
    """Export (or find in `directory`) the image and text towers; (image path, text path, text is trimmable)."""
    fn, trimmable = _text_fn(model)
    image, text = directory / "image.onnx", directory / "text.onnx"
    if image.is_file() and text.is_file():
        log.info("ONNX towers from the cache at %s", directory)
        return image, text, trimmable
    fp32 = directory / "fp32" if int8 else directory
    if not (fp32 / "image.onnx").is_file():
        _export(model, model.encode_image, torch.randn(2, 3, *image_size), fp32 / "image.onnx", {0: "n"})
    if not (fp32 / "text.onnx").is_file():
        # an example with real-looking tokens: start, a few words, end, padding (right-padded)
        length = 8 if trimmable else context_length
        tokens = torch.zeros(2, length, dtype=torch.long)
        tokens[:, :5] = torch.tensor([1, 5, 6, 7, 2])
        _export(model, fn, tokens, fp32 / "text.onnx", {0: "n", 1: "length"} if trimmable else {0: "n"})
    if int8:
        _quantize(fp32 / "image.onnx", image)
        _quantize(fp32 / "text.onnx", text)
        shutil.rmtree(fp32)  # only the quantised graphs are served (ZEST_RUNTIME=onnx keeps its own fp32 ones)
    log.info("ONNX towers exported to %s", directory)
    return image, text, trimmable


def convert(model: torch.nn.Module, device: torch.device, cache_root: Path | None, *, int8: bool,
            image_size: tuple[int, int], context_length: int, model_id: str, runtime: str):
    """(image, text, text_trimmed or None): the towers (models/runtimes.py wraps them in its `Towers`), run in
    ONNX Runtime, exported to or read from the disk cache."""
    if device.type != "cpu":
        raise ModelLoadError(f"runtime {runtime} runs on CPU only (device is {device}); use torch on GPU")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"runtime {runtime} needs onnxruntime (a zest dependency): pip install onnxruntime") \
            from None
    with contextlib.ExitStack() as stack:
        if cache_root is None:  # no cache asked for: export into a temp dir, gone once the sessions hold the graphs
            cache_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zest-onnx-")))
        directory = cache_dir(cache_root, model_id, model, runtime)
        image, text, trimmable = export_towers(model, directory, int8, image_size, context_length)
        image_tower, text_tower = OrtTower(image), OrtTower(text)
    return image_tower, text_tower, text_tower if trimmable else None
