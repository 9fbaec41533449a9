"""Servers a benchmark talks to: zest started like the tests start it, and what it needs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.server import Server

from . import OFFLINE_ENV, ROOT


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**OFFLINE_ENV, **(extra or {})}


@contextlib.contextmanager
def serve(env: dict[str, str], name: str, timeout: float = 600, log_dir: Path | None = None,
          root: Path | None = None) -> Iterator[Server]:
    """A started, ready `tests.server.Server` (run from checkout `root`, default this one, so an older or
    newer revision can be measured too), stopped on exit. The log goes to `log_dir/<name>.log`
    (default: a fresh temp dir); `server.ready_s` is how long start-up took."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="zest-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server(server_env(env), log_dir / f"{name}.log", cwd=Path(root or ROOT))
    try:
        server.ready_s = server.wait_ready(timeout=timeout)
        yield server
    finally:
        server.stop()


def served_runtime(url: str) -> dict[str, str] | None:
    """zest's `zest_runtime_info` labels from /metrics: the runtime asked for, the one chosen, the device."""
    import requests

    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("zest_runtime_info{"):
            pairs = (kv.split("=", 1) for kv in line[line.index("{") + 1:line.rindex("}")].split(","))
            return {k: v.strip('"') for k, v in pairs}
    return None


def untrained_rec_model(directory: Path) -> str:
    """Write an untrained ZESRec model of the default architecture to `directory`; its path."""
    import torch

    from zest.models.rec.model import ZesRecConfig, ZesRecNet
    from zest.models.rec.zesrec import ZesRec, save

    torch.manual_seed(0)
    return str(save(ZesRec(ZesRecNet(ZesRecConfig())), directory))


def rec_model_env(workdir: Path, record: dict[str, Any] | None = None) -> dict[str, str]:
    """Server env so the recommender service can start in the CLIP benchmarks (it is idle there).

    The server needs a ZESRec model; when neither ZEST_REC_MODEL is set nor the shipped checkpoint exists,
    an untrained one is written under `workdir` (noted in `record`)."""
    if os.environ.get("ZEST_REC_MODEL"):
        return {}
    try:
        from zest.service.recommender import shipped_model_dir

        if (shipped_model_dir() / "model.safetensors").is_file():
            return {}
        path = untrained_rec_model(Path(workdir) / "zesrec-untrained")
    except ImportError:  # a revision without the recommender
        return {}
    if record is not None:
        record.setdefault("notes", []).append(
            f"no shipped recommender checkpoint: the server ran with an untrained one (ZEST_REC_MODEL={path})")
    return {"ZEST_REC_MODEL": path}


def wait_until(probe: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "condition") -> float:
    """Poll `probe` until it returns True; seconds waited. Raises TimeoutError."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if probe():
                return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached after {timeout:.0f}s")
