"""`ZEST_RUNTIME=auto`: time the exact runtimes on this machine at start-up and serve the fastest.

The candidates keep fp32's results: torch (the reference), ONNX Runtime fp32 and, where the optional openvino
package is installed, OpenVINO fp32 on the same ONNX export, each admitted only if its features reach cosine >= ``EXACT_COSINE`` to torch's on the probe set
(models/runtimes.py). Each admitted one is timed on a short probe — image batches of 1 and 8 and a text batch
of 8, in interleaved rounds for at most ``PROBE_BUDGET_S`` — and the fastest serves, unless one within
``SPEED_TOLERANCE`` of it holds less memory (resident memory its towers added; for torch, its weights): a few
per cent on a shared CPU is noise, the memory is not (OpenVINO holds about twice the weights). The decision is kept as
JSON beside the ONNX exports, keyed by the model id, a digest of its weights, the library versions, the CPU
model and flags and the thread count, so a later start on the same machine only re-checks the chosen runtime.

On CUDA, auto is torch with the precision's autocast: the CPU fast paths do not run there. The encoder service
makes a first start's decision in a child process (models/runtime_child.py) and reads it from the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .cpu_features import cpu_model_and_flags
from .memory import release_freed, rss_mb
from .runtimes import EXACT_COSINE, check_fidelity, probe_images

log = logging.getLogger(__name__)

CANDIDATES = ("torch", "onnx", "openvino")  # exact runtimes only: onnx-int8 and int8 stay opt-in
NEEDS = {"onnx": "onnxruntime", "openvino": "openvino"}  # the package a candidate runs on (openvino: optional)
PROBE_BUDGET_S = 3.0  # timing rounds stop once this much time is spent (the gate and any export come first)
MIN_ROUNDS, MAX_ROUNDS = 2, 8
PROBE_BATCH = 8
SPEED_TOLERANCE = 0.10  # candidates this close to the fastest are tied on speed; the leanest of them serves
DECISION_VERSION = 2  # bump when the probe changes: part of the cache key


@dataclass
class Candidate:
    """One runtime as the probe saw it: median seconds per probe round (None: not timed), the memory it holds
    in MB (None: not measured), its fidelity to torch fp32 (1.0 for torch itself) and why it was left out."""

    runtime: str
    seconds: float | None = None
    cosine: float | None = None
    passed: bool = False
    error: str | None = None
    memory_mb: float | None = None

    def __str__(self) -> str:
        if self.error:
            return f"{self.runtime} refused ({self.error})"
        speed = f"{self.seconds * 1e3:.1f} ms" if self.seconds is not None else "not timed"
        memory = f", {self.memory_mb:.0f} MB" if self.memory_mb is not None else ""
        return f"{self.runtime} {speed}{memory}, cosine {self.cosine:.7f}"


@dataclass
class AutoChoice:
    """What `auto` picked on this machine and from what."""

    chosen: str
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    probe_s: float = 0.0
    cached: bool = False  # read from an earlier start's decision
    in_child: bool = False  # probed at this start, in a child process (models/runtime_child.py)

    def summary(self) -> str:
        timed = "; ".join(str(c) for c in self.candidates)
        source = ("from the cache" if self.cached
                  else f"probe {self.probe_s:.1f} s{' in a child process' if self.in_child else ''}")
        return f"chose {self.chosen} ({self.reason}){': ' + timed if timed else ''} [{source}]"

    def to_json(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "reason": self.reason, "probe_s": self.probe_s, "in_child": self.in_child,
                "candidates": [asdict(c) for c in self.candidates]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AutoChoice:
        return cls(data["chosen"], data["reason"], [Candidate(**c) for c in data["candidates"]],
                   float(data.get("probe_s", 0.0)), cached=True)


def cpu_signature() -> dict[str, str]:
    """The CPU model and a digest of its feature flags (what decides which kernels are fastest)."""
    model, flags = cpu_model_and_flags()
    return {"cpu": model, "cpu_flags": hashlib.blake2b(" ".join(sorted(flags)).encode(), digest_size=8).hexdigest()}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def decision_key(model_id: str, weights: str, threads: int) -> dict[str, Any]:
    """Everything the choice depends on; a change in any of it probes again."""
    from .onnx_runtime import EXPORT_VERSION

    return {"version": DECISION_VERSION, "model_id": model_id, "weights": weights, "threads": threads,
            "candidates": list(CANDIDATES), "export_version": EXPORT_VERSION,
            **{lib: _version(lib) for lib in ("torch", "onnxruntime", "openvino", "open_clip_torch", "transformers")},
            **cpu_signature()}


def decision_path(root: Path, key: dict[str, Any]) -> Path:
    from .onnx_runtime import slug

    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    return Path(root) / "auto" / f"{slug(key['model_id'])}-{key['weights']}" / f"{digest}.json"


def _read_decision(path: Path, key: dict[str, Any]) -> AutoChoice | None:
    try:
        data = json.loads(path.read_text())
        return AutoChoice.from_json(data["choice"]) if data.get("key") == key else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("runtime auto: ignoring an unreadable decision at %s (%s)", path, exc)
        return None


def _write_decision(path: Path, key: dict[str, Any], choice: AutoChoice) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "choice": choice.to_json()}, indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only data dir: serve anyway, probe again next start
        log.warning("runtime auto: could not keep the decision at %s (%s)", path, exc)


def _probe_inputs(encoder) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from .runtimes import PROBE_LABELS, PROBE_TEMPLATES

    pixels = encoder.preprocess(probe_images(n=PROBE_BATCH, seed=1))
    texts = [t.format(label) for label in PROBE_LABELS for t in PROBE_TEMPLATES][:PROBE_BATCH]
    return pixels[:1], pixels, texts


def time_candidates(encoders: dict[str, Any], budget_s: float = PROBE_BUDGET_S) -> dict[str, float]:
    """Median seconds per probe round (image batch 1 + image batch 8 + text batch 8) of each encoder, in
    interleaved rounds after one untimed warm-up round: at least MIN_ROUNDS, then until `budget_s` is spent
    or MAX_ROUNDS."""
    one, batch, texts = _probe_inputs(next(iter(encoders.values())))

    def probe_round(encoder) -> float:
        t = time.perf_counter()
        encoder.encode_pixels(one)
        encoder.encode_pixels(batch)
        encoder.encode_texts(texts)
        return time.perf_counter() - t

    for encoder in encoders.values():
        probe_round(encoder)
    rounds: dict[str, list[float]] = {name: [] for name in encoders}
    t_start = time.perf_counter()
    for i in range(MAX_ROUNDS):
        if i >= MIN_ROUNDS and time.perf_counter() - t_start > budget_s:
            break
        for name, encoder in encoders.items():
            rounds[name].append(probe_round(encoder))
    return {name: statistics.median(times) for name, times in rounds.items()}


def choose(encoder, cache_dir: Path | None, in_child: bool = False):
    """`encoder` (torch, fp32 on CPU) on the fastest exact runtime; the returned encoder's `auto_choice` says
    what was picked and why. `in_child`: the decision in the cache was just made by a child process."""
    if encoder.device.type != "cpu":
        dtype = str(encoder._autocast_dtype).replace("torch.", "") if encoder._autocast_dtype else "fp32"
        choice = AutoChoice("torch", f"{encoder.device.type}: torch with {dtype} autocast; the fast paths are CPU-only")
        return finish(encoder, encoder, choice)
    from .onnx_runtime import weights_digest

    threads = torch.get_num_threads()
    key = decision_key(encoder.model_id, weights_digest(encoder.model), threads)
    path = decision_path(cache_dir, key) if cache_dir is not None else None
    cached = _read_decision(path, key) if path is not None else None
    if cached is not None:
        cached.cached, cached.in_child = not in_child, in_child
        served = _admit(encoder, cached.chosen, cache_dir) if cached.chosen != "torch" else encoder
        if served is not None:
            return finish(encoder, served, cached)
        log.warning("runtime auto: the cached choice %s no longer passes; probing again", cached.chosen)
    t0 = time.perf_counter()
    candidates = [Candidate("torch", cosine=1.0, passed=True, memory_mb=weights_mb(encoder.model))]
    encoders = {"torch": encoder}
    for name in CANDIDATES[1:]:
        candidate = Candidate(name)
        candidates.append(candidate)
        if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
            candidate.error = "not installed"
            continue
        try:
            release_freed()  # what an export left behind is not the candidate's
            before = rss_mb()
            converted = encoder.converted(name, cache_dir)
            release_freed()
            candidate.memory_mb = rss_mb() - before
            report = check_fidelity(name, encoder, converted, min_cosine=EXACT_COSINE)
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run here is not a candidate
            candidate.error = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        candidate.cosine, candidate.passed = report.cosine, report.passed
        if report.passed:
            converted.fidelity = report
            encoders[name] = converted
        else:
            candidate.error = f"cosine {report.cosine:.7f} < {EXACT_COSINE}"
    for name, seconds in time_candidates(encoders).items():
        next(c for c in candidates if c.runtime == name).seconds = seconds
    chosen, reason = pick([c for c in candidates if c.runtime in encoders])
    choice = AutoChoice(chosen, f"{reason}, {threads} threads", candidates, time.perf_counter() - t0)
    if path is not None:
        _write_decision(path, key, choice)
    return finish(encoder, encoders[chosen], choice)


def weights_mb(model: torch.nn.Module) -> float:
    """What a torch model's parameters and buffers take, in MB."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def pick(timed: list[Candidate], tolerance: float = SPEED_TOLERANCE) -> tuple[str, str]:
    """(runtime, why) among timed exact candidates: the fastest, or the one holding the least memory among
    those within `tolerance` of the fastest's time."""
    fastest = min(timed, key=lambda c: c.seconds if c.seconds is not None else float("inf"))
    if len(timed) == 1 or fastest.seconds is None:
        return fastest.runtime, "the only exact runtime here" if len(timed) == 1 else "the fastest exact runtime"
    tied = [c for c in timed if c.seconds is not None and c.seconds <= fastest.seconds * (1 + tolerance)]
    leanest = min(tied, key=lambda c: c.memory_mb if c.memory_mb is not None else float("inf"))
    if leanest is fastest or leanest.memory_mb is None or fastest.memory_mb is None \
            or leanest.memory_mb >= fastest.memory_mb:
        return fastest.runtime, "the fastest exact runtime"
    return leanest.runtime, (f"within {tolerance:.0%} of the fastest ({fastest.runtime}) and "
                             f"{fastest.memory_mb - leanest.memory_mb:.0f} MB leaner")


def _admit(encoder, name: str, cache_dir: Path | None):
    """`encoder` converted to `name` if it still passes the exact gate, else None."""
    try:
        converted = encoder.converted(name, cache_dir)
        report = check_fidelity(name, encoder, converted, min_cosine=EXACT_COSINE)
    except Exception as exc:  # noqa: BLE001 - fall back to a fresh probe
        log.warning("runtime auto: %s failed (%s: %.200s)", name, type(exc).__name__, exc)
        return None
    if not report.passed:
        return None
    converted.fidelity = report
    return converted


def finish(reference, served, choice: AutoChoice):
    served.requested_runtime = "auto"
    served.auto_choice = choice
    log.info("runtime auto for %s on %s: %s", reference.model_id, reference.device, choice.summary())
    return served
