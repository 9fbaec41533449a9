"""The machine a benchmark ran on: CPU, versions, git revision, load before the run, threads."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zest.models.cpu_features import cpu_model_and_flags

from . import ROOT


def cpu_model() -> str:
    return cpu_model_and_flags()[0] or "unknown"


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def git_revision() -> str | None:
    """The checked-out commit (read-only git call), '+dirty' when the tree has local changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{'+dirty' if dirty else ''}" if rev else None
    except Exception:
        return None


def env_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, threads, library versions, date, load."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.is_available(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cpu_busy_before": cpu_busy_fraction(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(pkg) for name, pkg in [
            ("torch", "torch"), ("open_clip", "open_clip_torch"), ("transformers", "transformers"),
            ("bentoml", "bentoml"), ("numpy", "numpy"), ("pillow", "pillow"), ("tokenizers", "tokenizers")]},
        "git": git_revision(),
        "argv": sys.argv,
    }


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def cpu_busy_fraction(seconds: float = 2.0) -> float | None:
    """Share of all cores busy over the next `seconds` (from /proc/stat): what else is running now."""
    a = _cpu_times()
    time.sleep(seconds)
    b = _cpu_times()
    if a is None or b is None or b[0] == a[0]:
        return None
    return 1 - (b[1] - a[1]) / (b[0] - a[0])


def warn_if_busy(env: dict[str, Any], threshold: float = 0.2) -> bool:
    """Print a warning when the CPU was busy before the benchmark started (env["cpu_busy_before"])."""
    busy = env.get("cpu_busy_before")
    if busy is not None and busy > threshold:
        print(f"WARNING: {busy:.0%} of the CPU was busy before this benchmark started: something else is "
              "running, so these numbers are not representative (record them on a quiet machine).")
        return True
    return False


def set_threads(n: int | None) -> None:
    """Torch intra-op threads for in-process contenders (None: torch's default, one per core)."""
    import torch

    if n:
        torch.set_num_threads(n)
