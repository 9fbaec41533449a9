"""Shared bits of the benchmarks: environment record, timing, percentiles, tables, JSON, the server.

The benchmarks are scripts a person runs by hand (`python3 benchmarks/bench_image.py`); they are never
collected by the unit tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tests.server import Server

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "True",
               "TOKENIZERS_PARALLELISM": "false"}
os.environ.update({k: os.environ.get(k, v) for k, v in OFFLINE_ENV.items()})


# ------------------------------------------------------------------------------------ environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


# ----------------------------------------------------------------------------------------- stats
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latencies given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "mean": statistics.fmean(ms), "max": max(ms)}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Sample:
    """One timed run of a contender: `count` units (images, requests, items) in `seconds`."""

    seconds: float
    count: int
    latencies: list[float] = field(default_factory=list)  # per request/batch, seconds
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def repeat_for(fn: Callable[[], Sample], min_seconds: float) -> Callable[[], Sample]:
    """`fn` wrapped so that one measurement repeats it until at least `min_seconds` were spent: fast
    contenders (a small model) are not timed over a few milliseconds of work."""

    def run() -> Sample:
        total = Sample(0.0, 0)
        while total.seconds < min_seconds or total.count + total.errors == 0:
            s = fn()
            total = Sample(total.seconds + s.seconds, total.count + s.count, total.latencies + s.latencies,
                           total.errors + s.errors, (total.error_messages + s.error_messages)[:5])
        return total

    return run


def interleave(contenders: dict[str, Callable[[], Sample]], repeats: int, warmup: int = 1,
               log: Callable[[str], None] = print) -> dict[str, list[Sample]]:
    """Round-robin: each round runs every contender once; the order rotates each round so no contender
    always runs first (or right after the expensive one). Warm-up rounds are not recorded."""
    names = list(contenders)
    for w in range(warmup):
        for name in names:
            log(f"  warm-up {w + 1}/{warmup}: {name}")
            contenders[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            s = contenders[name]()
            samples[name].append(s)
            log(f"  round {r + 1}/{repeats}: {name:<28} {s.rate:9.2f}/s" + (f"  ({s.errors} errors)" if s.errors else ""))
    return samples


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Median rate over repeats; latency percentiles pooled over every request of every repeat."""
    lat = [x for s in samples for x in s.latencies]
    return {"rate_median": median([s.rate for s in samples]), "rates": [s.rate for s in samples],
            "count_per_repeat": samples[0].count if samples else 0,
            "latency_ms": latency_ms(lat), "errors": sum(s.errors for s in samples),
            "error_messages": [m for s in samples for m in s.error_messages][:5]}


# ------------------------------------------------------------------------------------ HTTP load
def run_clients(n_clients: int, n_requests: int, request: Callable[[Any, int], None]) -> Sample:
    """`n_requests` calls of `request(session, i)` from `n_clients` threads, each with its own
    `requests.Session` (keep-alive). `request` raises on failure; the first few failures are kept in
    `Sample.error_messages`. Rate = successful requests per second of wall time."""
    import requests

    local = threading.local()
    latencies: list[float] = []
    messages: list[str] = []
    errors = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal errors
        if not hasattr(local, "session"):
            local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            request(local.session, i)
            failure = None
        except Exception as exc:
            failure = error_text(exc, 300)
        elapsed = time.perf_counter() - t0
        with lock:
            if failure is None:
                latencies.append(elapsed)
            else:
                errors += 1
                if len(messages) < 5:
                    messages.append(failure)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_clients) as pool:
        list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    return Sample(wall, len(latencies), latencies, errors, messages)


# ----------------------------------------------------------------------------------------- server
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


# ------------------------------------------------------------------------------------- synthetic
def make_images(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list:
    """`n` distinct RGB PIL images, photo-like enough that JPEG sizes are realistic (smooth + noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(n):
        fx, fy, phase = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
        base = np.stack([np.sin(xx * fx + phase + c) * np.cos(yy * fy - c) for c in range(3)], axis=-1)
        pixels = (base * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def jpeg_bytes(image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- output
def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    def fmt(x: Any) -> str:
        if isinstance(x, float):
            if x != x:  # nan
                return "-"
            return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
        return "-" if x is None else str(x)

    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def check_target(name: str, value: float | None, threshold: float, higher_is_better: bool = True,
                 errors: int = 0) -> dict[str, Any]:
    """A target line: PASS/MISS, N/A when the value could not be measured. Failed requests make it a
    MISS whatever the rate of the successful ones."""
    if value is None or value != value:
        verdict = "N/A"
    elif errors:
        verdict = "MISS"
    elif higher_is_better:
        verdict = "PASS" if value >= threshold else "MISS"
    else:
        verdict = "PASS" if value <= threshold else "MISS"
    op = ">=" if higher_is_better else "<="
    return {"target": name, "value": value, "threshold": threshold, "op": op, "verdict": verdict, "errors": errors}


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    print("\nTargets")
    for t in targets:
        value = "n/a" if t["value"] is None or t["value"] != t["value"] else f"{t['value']:.3f}"
        failed = f" -- {t['errors']} failed requests" if t.get("errors") else ""
        print(f"  [{t['verdict']:>4}] {t['target']}: {value} (target {t['op']} {t['threshold']}){failed}")


def write_results(name: str, payload: dict[str, Any], quick: bool = False) -> Path:
    """`benchmarks/results/<name>.json` (full runs) or `<name>.quick.json` (smoke runs), plus a
    timestamped copy under results/history/ so earlier runs are kept."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{name}.quick" if quick else name
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    path = RESULTS_DIR / f"{stem}.json"
    path.write_text(text)
    history = RESULTS_DIR / "history"
    history.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (history / f"{stem}-{stamp}.json").write_text(text)
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return path


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def slug(text: str) -> str:
    """A file-name-safe form of a model spec ("ViT-B-32/random" -> "ViT-B-32_random")."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)


def error_text(exc: BaseException, limit: int = 4000) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]


# ------------------------------------------------------------------------------------------- CLI
def add_common_args(ap) -> None:
    """Options every benchmark takes."""
    ap.add_argument("--quick", action="store_true", help="small smoke run (results go to <name>.quick.json)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: 5, quick: 3)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded warm-up rounds")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in this process (default: torch's own, one per core); the server "
                         "keeps its own default")
    ap.add_argument("--server-root", type=Path, default=None,
                    help="serve from another checkout of zest (default: this one)")
    ap.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for the server to be ready")
    ap.add_argument("--log-dir", type=Path, default=None, help="where server logs go (default: a temp dir)")


def quiet_libraries() -> None:
    """No progress bars or per-call warnings from transformers/open_clip in the tables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    logging.getLogger("zest.models.loading").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
