"""CPU fast paths for a loaded CLIP model, chosen by one setting (``ZEST_RUNTIME``: torch, int8, onnx,
onnx-int8, openvino, bf16, auto; the README's settings table says what each runs), each admitted only through a
fidelity gate.

A runtime turns the encoder's model into `Towers`: the functions that encode pixels and tokens. int8 is
re-quantised at each start (seconds); ONNX exports are kept on disk (models/onnx_runtime.py); `auto` picks the
fastest exact one (models/auto_runtime.py). The gate, `check_fidelity`, compares the candidate with fp32 on a
fixed probe set (``MIN_COSINE``, ``MIN_AGREEMENT``); a runtime that fails is refused and zest serves torch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import ModelLoadError

log = logging.getLogger(__name__)

MIN_COSINE = 0.999
EXACT_COSINE = 0.99999  # what `auto` admits: runtimes that keep fp32's features, not approximations of them
MIN_AGREEMENT = 0.99
PROBE_LABELS = ("a red circle", "a blue square", "a green triangle", "a photo of a cat", "a photo of a dog",
                "a car", "a tree", "text on a sign", "a yellow star", "a black and white pattern")
PROBE_TEMPLATES = ("a photo of {}.", "a drawing of {}.")


def _linears_called_as_modules(model: torch.nn.Module) -> set[str]:
    """Names of the nn.Linear layers that run through their own forward. open_clip's AttentionPool2d (the
    ModifiedResNet head) reads its projections' weights directly, so those stay fp32."""
    from open_clip.modified_resnet import AttentionPool2d

    direct = {f"{name}.{child}" for name, module in model.named_modules() if isinstance(module, AttentionPool2d)
              for child, _ in module.named_children()}
    return {name for name, module in model.named_modules()
            if type(module) is torch.nn.Linear and name not in direct}


@dataclass(frozen=True)
class Towers:
    """What a runtime gives the encoder: pixels (n, 3, H, W) -> features, tokens at full padding -> features,
    and (where the text tower allows it) tokens cut to the batch's longest sequence -> features."""

    image: Callable[[torch.Tensor], torch.Tensor]
    text: Callable[[torch.Tensor], torch.Tensor]
    text_trimmed: Callable[[torch.Tensor], torch.Tensor] | None

    @classmethod
    def of(cls, model: Any) -> Towers:  # an open_clip model (untyped): encode_image/encode_text
        """The towers of a torch CLIP model, as loaded or converted in place (int8)."""
        from .text_tower import trimmed_text_encoder

        return cls(model.encode_image, model.encode_text, trimmed_text_encoder(model))


def _quantize_linear_int8(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if device.type != "cpu":
        raise ModelLoadError(f"runtime int8 runs on CPU only (device is {device}); use torch with autocast on GPU")
    names = _linears_called_as_modules(model)
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)
    for name, module in quantized.named_modules():
        if name in names:
            # open_clip reads a block's compute dtype from mlp.c_fc.weight, which a quantised layer does not
            # have as a tensor; this attribute is open_clip's own hook for int8 layers.
            module.int8_original_dtype = torch.float32
    return quantized.eval()


def _torch_int8(encoder, cache_root: Path | None) -> Towers:
    return Towers.of(_quantize_linear_int8(encoder.model, encoder.device))


def _openvino(encoder, cache_root: Path | None) -> Towers:
    from . import openvino_runtime

    image, text, text_trimmed = openvino_runtime.convert(
        encoder.model, encoder.device, cache_root, image_size=encoder.image_size,
        context_length=encoder.context_length, model_id=encoder.model_id)
    return Towers(image=image, text=text, text_trimmed=text_trimmed)


def _bf16(encoder, cache_root: Path | None) -> Towers:
    """The torch model under bf16 autocast: refused on a GPU (there it is ZEST_PRECISION) and on a CPU that would
    only emulate bf16 (models/cpu_features.py)."""
    from .cpu_features import BF16_FLAGS, native_bf16

    if encoder.device.type != "cpu":
        raise ModelLoadError(f"runtime bf16 runs on CPU only (device is {encoder.device}); on a GPU set "
                             "ZEST_PRECISION=bf16")
    if not native_bf16():
        raise ModelLoadError(f"this CPU has no native bf16 ({' or '.join(BF16_FLAGS)} in /proc/cpuinfo): bf16 would "
                             "be emulated, slower than fp32")
    towers = Towers.of(encoder.model)

    def autocast(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(batch: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(batch)
        return run

    return Towers(autocast(towers.image), autocast(towers.text),
                  autocast(towers.text_trimmed) if towers.text_trimmed is not None else None)


def _onnx(int8: bool):
    def convert(encoder, cache_root: Path | None) -> Towers:
        from . import onnx_runtime

        image, text, text_trimmed = onnx_runtime.convert(
            encoder.model, encoder.device, cache_root, int8=int8, image_size=encoder.image_size,
            context_length=encoder.context_length, model_id=encoder.model_id, runtime="onnx-int8" if int8 else "onnx")
        return Towers(image=image, text=text, text_trimmed=text_trimmed)
    return convert


@dataclass(frozen=True)
class Runtime:
    name: str
    description: str
    # (ClipEncoder, cache directory or None) -> Towers; None: the model as loaded
    convert: Callable[..., Towers] | None
    runs_torch_model: bool = False  # its towers run the encoder's own torch model, whose weights must stay


RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime("torch", "the model as loaded", None, runs_torch_model=True),
    "int8": Runtime("int8", "PyTorch dynamic int8 quantisation of the Linear layers (CPU)", _torch_int8),
    "onnx": Runtime("onnx", "ONNX Runtime, fp32 (CPU)", _onnx(int8=False)),
    "onnx-int8": Runtime("onnx-int8", "ONNX Runtime with int8 MatMul weights (CPU)", _onnx(int8=True)),
    "openvino": Runtime("openvino", "OpenVINO, fp32, from the onnx export (CPU; optional install)", _openvino),
    "bf16": Runtime("bf16", "PyTorch bf16 autocast (CPU with AVX512-BF16 or AMX)", _bf16, runs_torch_model=True),
}
AUTO = "auto"  # not a runtime of its own: picks one of RUNTIMES at start-up (models/auto_runtime.py)


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ModelLoadError(f"unknown runtime {name!r}: use one of {AUTO}, {', '.join(RUNTIMES)}") from None


def probe_images(size: int = 256, n: int = 24, seed: int = 0) -> list[Image.Image]:
    """Seeded synthetic probe images: shapes, stripes and noise in varied colours."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        kind = i % 3
        if kind == 0:  # a filled shape on a plain background
            img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
            draw, box = ImageDraw.Draw(img), sorted(rng.integers(20, size - 20, 4))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if i % 2 else draw.rectangle)((box[0], box[1], box[2], box[3]), fill=colour)
        elif kind == 1:  # stripes
            period = int(rng.integers(4, 32))
            x = np.arange(size)
            stripes = ((x // period) % 2)[None, :, None] * rng.integers(0, 256, 3)[None, None, :]
            img = Image.fromarray(np.broadcast_to(stripes, (size, size, 3)).astype(np.uint8))
        else:  # smooth noise
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
        images.append(img)
    return images


@dataclass
class FidelityReport:
    runtime: str
    min_image_cosine: float
    min_text_cosine: float
    top1_agreement: float
    min_cosine: float = MIN_COSINE  # the bar this report is judged by (EXACT_COSINE for `auto`)

    @property
    def cosine(self) -> float:
        return min(self.min_image_cosine, self.min_text_cosine)

    @property
    def passed(self) -> bool:
        return self.cosine >= self.min_cosine and self.top1_agreement >= MIN_AGREEMENT

    def __str__(self) -> str:
        return (f"runtime {self.runtime}: min feature cosine vs fp32 {self.cosine:.{_digits(self.min_cosine)}f}"
                f" (>= {self.min_cosine}), zero-shot top-1 agreement {self.top1_agreement:.1%} (>= {MIN_AGREEMENT:.0%})")


def _digits(bar: float) -> int:
    """Decimals that show a cosine against `bar` (0.999 -> 5, 0.99999 -> 7)."""
    return len(f"{bar}".split(".")[-1]) + 2


def check_fidelity(runtime: str, reference, candidate, min_cosine: float = MIN_COSINE) -> FidelityReport:
    """Compare two encoders (``encode_images``/``encode_texts`` -> unit rows) on the probe set."""
    images = probe_images()
    texts = [t.format(label) for label in PROBE_LABELS for t in PROBE_TEMPLATES]
    ref_img, cand_img = reference.encode_images(images), candidate.encode_images(images)
    ref_txt, cand_txt = reference.encode_texts(texts), candidate.encode_texts(texts)

    def classes(feats: np.ndarray) -> np.ndarray:
        mean = feats.reshape(len(PROBE_LABELS), len(PROBE_TEMPLATES), -1).mean(axis=1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    agree = (ref_img @ classes(ref_txt).T).argmax(1) == (cand_img @ classes(cand_txt).T).argmax(1)
    return FidelityReport(runtime, float((ref_img * cand_img).sum(1).min()), float((ref_txt * cand_txt).sum(1).min()),
                          float(agree.mean()), min_cosine)
