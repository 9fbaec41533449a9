"""A first start of the converted runtimes, done in a short-lived child process.

``auto``, ``onnx``, ``onnx-int8`` and ``openvino`` export the model to ONNX (torch.onnx, onnx, onnxscript) the
first time, and ``auto`` also gates and times every candidate (openvino among them): done in the serving
process, those libraries stay loaded for its whole life. `load_prepared` runs that work in
``python -m zest.models.runtime_prepare`` instead (a fresh interpreter: nothing of the server's process is
re-imported or inherited but the environment), with the same spec, precision, batch size, thread count and
cache; the child writes the exports and auto's decision there and exits, and the serving process loads the
chosen runtime from the cache exactly as a cached start does, fidelity gate included. A child that fails is
logged and the work is done in the serving process, as before; one that runs past its timeout is killed and
torch serves (done here it would be as slow: the start stays bounded), with a log line that says so.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .spec import RANDOM_WEIGHTS, parse_spec

log = logging.getLogger(__name__)
CHILD_MODULE = f"{__package__}.runtime_prepare"  # the child's entry point (it imports the encoder; this module does not)

RUNTIMES = ("auto", "onnx", "onnx-int8", "openvino")  # what exports (and, for auto, probes) on a first start
STDERR_TAIL = 2000  # characters of a failed child's output kept in the log


def _for_child(spec: str) -> tuple[str, str]:
    """(the spec the child loads, the id the loaded model will have), without loading it. A BentoML tag is
    resolved here, in the store the server reads (a bento's own, set in process, not in the environment), and
    handed on as its directory under the tag's id."""
    parsed = parse_spec(spec)
    if parsed.kind != "bento":
        return spec, parsed.model_id
    try:
        import bentoml

        stored = bentoml.models.get(parsed.name)
    except Exception:  # noqa: BLE001 - the server's own load reports it
        return spec, parsed.model_id
    return f"local-dir:{stored.path}", str(stored.tag)


def _maybe_cached(root: Path, model_id: str, runtime: str) -> bool:
    """Whether the cache may hold what `runtime` needs for this model (any weights): False means a first start,
    where the child runs before the model is loaded here, so that the two processes' peaks never overlap."""
    from .onnx_runtime import slug

    base = root / "auto" if runtime == "auto" else root
    return any(base.glob(f"{slug(model_id)}-*"))


def is_prepared(encoder: Any, runtime: str, root: Path) -> bool:
    """Whether the cache holds what `runtime` needs for `encoder`'s weights, at this thread count."""
    from . import auto_runtime, onnx_runtime

    if runtime == "auto":
        key = auto_runtime.decision_key(encoder.model_id, onnx_runtime.weights_digest(encoder.model),
                                        torch.get_num_threads())
        choice = auto_runtime._read_decision(auto_runtime.decision_path(root, key), key)
        if choice is None or choice.chosen == "torch":
            return choice is not None
        runtime = choice.chosen
    try:
        directory = onnx_runtime.cache_dir(root, encoder.model_id, encoder.model,
                                           "onnx" if runtime == "openvino" else runtime)
    except ImportError:  # no onnxruntime: the in-process path says so
        return False
    return (directory / "image.onnx").is_file() and (directory / "text.onnx").is_file()


def _command(spec: str, runtime: str, precision: str, batch_size: int, root: Path) -> list[str]:
    child_spec, model_id = _for_child(spec)
    return [sys.executable, "-m", CHILD_MODULE, "--spec", child_spec, "--model-id", model_id, "--runtime", runtime,
            "--precision", precision, "--batch-size", str(batch_size), "--threads", str(torch.get_num_threads()),
            "--cache-dir", str(root), "--parent", str(os.getpid())]


def _environment() -> dict[str, str]:
    """The server's environment, with the directory zest was imported from first on the child's path."""
    import zest

    env = dict(os.environ)
    home = str(Path(zest.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([home, *filter(None, [env.get("PYTHONPATH")])])
    return env


class ChildTimeout(Exception):
    """The child ran past its timeout: the first start's work is not repeated here, which would be as slow."""


def run_child(spec: str, runtime: str, precision: str, batch_size: int, root: Path, timeout_s: float) -> str | None:
    """Run the first start's work in a child; None once it succeeded, else why it did not. Raises
    `ChildTimeout` past `timeout_s` (the child is killed)."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(_command(spec, runtime, precision, batch_size, root), env=_environment(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise ChildTimeout(f"the child process timed out after {timeout_s:g} s "
                           "(ZEST_RUNTIME_PROBE_TIMEOUT_S)") from None
    except OSError as exc:
        return f"could not start ({type(exc).__name__}: {exc})"
    if done.returncode != 0:
        return f"exited with status {done.returncode}: {done.stderr[-STDERR_TAIL:].strip()}"
    log.info("runtime %s for %s: first start done in a child process in %.1f s", runtime, spec,
             time.perf_counter() - t0)
    return None


def load_prepared(load: Callable[[], Any], spec: str, runtime: str, precision: str, batch_size: int,
                  root: Path, timeout_s: float) -> tuple[Any, bool, str | None]:
    """(`load()`'s torch encoder, whether a child prepared the cache for it at this start, why torch serves
    instead if it must). Neither: what is missing from the cache is made in this process by `with_runtime`, as
    without a child (a child that failed: logged). A child that timed out: torch serves, the start stays bounded."""
    if parse_spec(spec).pretrained == RANDOM_WEIGHTS:  # another load would give other weights
        log.info("runtime %s for %s: random weights differ per load; first start in this process", runtime, spec)
        return load(), False, None
    ran = not _maybe_cached(root, _for_child(spec)[1], runtime)
    encoder = None
    try:
        failure = run_child(spec, runtime, precision, batch_size, root, timeout_s) if ran else None
        encoder = load()
        if failure is None and is_prepared(encoder, runtime, root):
            return encoder, ran, None
        if not ran:  # something of this model is cached, but not for these weights or this machine
            ran, failure = True, run_child(spec, runtime, precision, batch_size, root, timeout_s)
            if failure is None and is_prepared(encoder, runtime, root):
                return encoder, True, None
    except ChildTimeout as exc:
        return encoder if encoder is not None else load(), False, str(exc)
    log.warning("runtime %s for %s: the child process %s; first start in this process instead", runtime, spec,
                failure or "left nothing in the cache for these weights")
    return encoder, False, None


def serve_torch(encoder: Any, runtime: str, reason: str) -> Any:
    """`encoder` on torch, asked for as `runtime`, with the log line (and for auto the choice) that says why."""
    from .auto_runtime import AutoChoice, finish

    if runtime == "auto":
        return finish(encoder, encoder, AutoChoice("torch", f"{reason}; serving with torch"))
    encoder.requested_runtime = runtime
    log.error("runtime %s refused for %s (%s); serving with torch", runtime, encoder.model_id, reason)
    return encoder
