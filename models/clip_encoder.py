"""`ClipEncoder`: one object that turns images and texts into L2-normalised CLIP features."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ModelLoadError
from .factory import load_clip
from .images import to_rgb
from .loaded import LoadedClip
from .memory import release_freed
from .runtimes import AUTO, FidelityReport, Towers, check_fidelity, get_runtime
from .text_tower import content_lengths, pad_token_id
from .zero_shot import Scoring, scoring_of

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def pick_device(device: str | None = None) -> torch.device:
    """`None`/"auto" -> CUDA when present, else CPU; anything else is taken as given."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA device")
    return dev


def cpu_bf16(device: torch.device, precision: str, runtime: str) -> tuple[str, str]:
    """(precision, runtime) to build with. On CPU, precision bf16 is the runtime bf16: an fp32 encoder whose
    bf16 copy serves only if it passes the fidelity gate (models/runtimes.py), else fp32 serves."""
    if device.type != "cpu" or precision != "bf16":
        return precision, runtime
    if runtime not in ("torch", AUTO, "bf16"):
        raise ModelLoadError(f"precision bf16 on CPU is the runtime bf16, which cannot run with runtime {runtime!r}:"
                             " set ZEST_RUNTIME to bf16 (or auto), or ZEST_PRECISION to fp32")
    return "fp32", "bf16"


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain fp32)."""
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type == "cpu":
        raise ModelLoadError("precision fp16 needs a GPU; on CPU use fp32 or bf16")
    if device.type == "cpu":  # bf16: not an autocast of the reference encoder, but the gated runtime bf16
        raise ModelLoadError("on CPU, bf16 is the runtime bf16 (gated against fp32): build the encoder at fp32 "
                             "and ask for runtime bf16, as ClipEncoder.from_spec does for precision bf16")
    return torch.float16 if precision == "fp16" else torch.bfloat16


class ClipEncoder:
    """Image and text towers of one CLIP model.

    Features are float32 numpy arrays of shape (n, dim), unit L2 norm. Images go through the
    model's own eval transform (its resize interpolation, crop, mean and std).
    """

    def __init__(self, loaded: LoadedClip, device: torch.device, precision: str = "auto", batch_size: int = 32):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model: Any = loaded.model.to(device).eval()  # an open_clip model (untyped); None once released
        self.preprocess_transform = loaded.preprocess
        self.tokenizer = loaded.tokenizer
        self.model_id = loaded.model_id
        self.preprocess_cfg = loaded.preprocess_cfg
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.runtime = "torch"  # what runs the model (models/runtimes.py); with_runtime() changes it
        self.requested_runtime = "torch"  # what was asked for (ZEST_RUNTIME): `runtime`, or "auto"
        self.fidelity: FidelityReport | None = None  # the FidelityReport that admitted a non-torch runtime
        self.auto_choice: Any = None  # with "auto": its AutoChoice, what it picked and why (models/auto_runtime.py)
        # logit scale, context length and logit bias once the torch model is dropped
        self._kept: tuple[float, int, float | None] = (0.0, 0, None)
        self._autocast_dtype = autocast_dtype(device, precision)
        self._pad_id = pad_token_id(self.tokenizer)
        self._use(Towers.of(self.model))
        self.dim = int(self.encode_texts(["a photo."]).shape[1])

    def _use(self, towers: Towers) -> None:
        self._encode_image, self._encode_text, self._encode_trimmed = towers.image, towers.text, towers.text_trimmed

    @classmethod
    def from_spec(cls, spec: str, device: str | None = None, precision: str = "auto",
                  batch_size: int = 32, runtime: str = "torch", cache_dir: str | Path | None = None,
                  child_timeout_s: float | None = None) -> ClipEncoder:
        """`cache_dir`: where runtimes that convert the model once (ONNX) keep what they made. `child_timeout_s`:
        on CPU, a first start of auto, onnx, onnx-int8 or openvino (nothing in the cache yet) exports and probes
        in a child process bounded by it, so that this one loads only what serves (models/runtime_child.py)."""
        from . import runtime_child

        dev = pick_device(device)
        precision, runtime = cpu_bf16(dev, precision, runtime)

        def load() -> ClipEncoder:
            return cls(load_clip(spec, dev), dev, precision=precision, batch_size=batch_size)

        in_child, torch_because = False, None
        if child_timeout_s is not None and cache_dir is not None and dev.type == "cpu" \
                and runtime in runtime_child.RUNTIMES:
            encoder, in_child, torch_because = runtime_child.load_prepared(
                load, spec, runtime, precision, batch_size, Path(cache_dir).expanduser(), child_timeout_s)
        else:
            encoder = load()
        if torch_because is not None:
            return runtime_child.serve_torch(encoder, runtime, torch_because)
        return encoder.with_runtime(runtime, cache_dir, in_child=in_child) if runtime != "torch" else encoder

    def converted(self, name: str, cache_dir: str | Path | None = None) -> ClipEncoder:
        """A copy of this encoder on runtime `name`, not yet gated (raises if the conversion fails)."""
        runtime = get_runtime(name)
        if runtime.convert is None:
            return self
        towers = runtime.convert(self, Path(cache_dir).expanduser() if cache_dir is not None else None)
        candidate = copy.copy(self)
        candidate._use(towers)
        candidate.runtime = name
        return candidate

    def with_runtime(self, name: str, cache_dir: str | Path | None = None, in_child: bool = False) -> ClipEncoder:
        """This encoder on another runtime (models/runtimes.py) if it passes the fidelity gate against this
        one; otherwise this encoder, with one log line that says why. "auto": the fastest runtime that keeps
        fp32's results on this machine (models/auto_runtime.py). `in_child`: a child process has just made
        what the cache holds for it (models/runtime_child.py)."""
        if name == AUTO:
            from .auto_runtime import choose

            return choose(self, Path(cache_dir).expanduser() if cache_dir is not None else None, in_child=in_child)
        if get_runtime(name).convert is None:
            return self
        self.requested_runtime = name  # also on the fallback below: what was asked for, next to what serves
        try:
            candidate = self.converted(name, cache_dir)
            report = check_fidelity(name, self, candidate)
        except Exception as exc:  # noqa: BLE001 - any failure of a fast path falls back to torch
            log.error("runtime %s refused for %s (%s: %.300s); serving with torch", name, self.model_id,
                      type(exc).__name__, exc)
            return self
        if not report.passed:
            log.error("runtime %s refused for %s, failed the fidelity gate: %s; serving with torch",
                      name, self.model_id, report)
            return self
        log.info("runtime %s admitted for %s: %s", name, self.model_id, report)
        candidate.fidelity = report
        return candidate

    def release_torch_weights(self) -> bool:
        """Drop the fp32 torch model once another runtime serves (ONNX Runtime and int8 hold their own copy of
        the weights): for ViT-B-32 ~600 MB less. What the encoder reads from the model stays; it can no longer be
        converted or gated again. False (and nothing dropped) while the torch model itself serves (torch, bf16)."""
        if self.model is None or get_runtime(self.runtime).runs_torch_model:
            return False
        self._kept = (self.logit_scale, self.context_length, self.logit_bias)
        self.model = None
        release_freed()  # most of the weights sat in malloc's heap: give them back (ViT-B-32: ~300 MB more)
        return True

    @property
    def logit_scale(self) -> float:
        if self.model is None:
            return self._kept[0]
        return float(self.model.logit_scale.detach().exp().float().cpu().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        """The learned logit bias of a sigmoid-loss model (SigLIP), None for a softmax one (models/zero_shot.py)."""
        if self.model is None:
            return self._kept[2]
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.detach().float().cpu().reshape(-1)[0])

    @property
    def scoring(self) -> Scoring:
        return scoring_of(self.logit_bias)

    @property
    def context_length(self) -> int:
        if self.model is None:
            return self._kept[1]
        return int(getattr(self.tokenizer, "context_length", None) or self.model.context_length)

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.preprocess_cfg.get("size", 224)
        return (size, size) if isinstance(size, int) else tuple(size)

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _run(self, fn, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            features = fn(batch.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1).cpu()

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB-normalise then apply the model's eval transform: (n, 3, H, W) float32 on CPU."""
        return torch.stack([self.preprocess_transform(to_rgb(img)) for img in images])

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Encode already-preprocessed pixels (n, 3, H, W)."""
        pixels = torch.as_tensor(pixels, dtype=torch.float32)
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != self.image_size:
            raise ValueError(f"pixels must have shape (n, 3, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(pixels.shape)}")
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._run(self._encode_image, chunk) for chunk in pixels.split(self.batch_size)]
        return torch.cat(out).numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self.encode_pixels(self.preprocess(images[i:i + self.batch_size]))
                               for i in range(0, len(images), self.batch_size)])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts; each is truncated to the model's context length the way its tokenizer does.

        Texts are batched by token length and each batch is cut to its longest sequence where the text tower
        allows it (models/text_tower.py), which gives the same features as full padding, faster."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(texts)
        if self._encode_trimmed is None:
            out = [self._run(self._encode_text, chunk) for chunk in tokens.split(self.batch_size)]
            return torch.cat(out).numpy()
        lengths = content_lengths(tokens, self._pad_id)
        order = torch.argsort(lengths, stable=True)
        chunks = []
        for idx in order.split(self.batch_size):
            longest = max(1, int(lengths[idx].max()))
            chunks.append((idx, self._run(self._encode_trimmed, tokens[idx, :longest])))
        features = torch.empty((len(texts), chunks[0][1].shape[1]), dtype=torch.float32)
        for idx, feats in chunks:
            features[idx] = feats
        return features.numpy()
