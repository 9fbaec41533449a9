"""zest's own Prometheus metrics, served on BentoML's /metrics beside its request metrics.

Created on first use inside a worker, after BentoML has set PROMETHEUS_MULTIPROC_DIR (so every worker's
values reach /metrics); the gauges sum over live workers.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_class_cache = None
_batches = None
_runtime = None


def _class_cache_metrics():
    global _class_cache
    with _lock:
        if _class_cache is None:
            from prometheus_client import Counter, Gauge

            _class_cache = (
                Counter("zest_class_cache_hits", "labels whose class embedding came from the cache"),
                Counter("zest_class_cache_misses", "labels whose class embedding had to be encoded"),
                Gauge("zest_class_cache_entries", "class embeddings held in memory", multiprocess_mode="livesum"),
                Gauge("zest_class_cache_bytes", "memory held by cached class embeddings", multiprocess_mode="livesum"),
            )
        return _class_cache


def observe_class_cache(hits: int, misses: int, entries: int, nbytes: int) -> None:
    """Called by the class-embedding cache after each lookup (hits/misses of that lookup, sizes after it)."""
    hit_counter, miss_counter, entries_gauge, bytes_gauge = _class_cache_metrics()
    if hits:
        hit_counter.inc(hits)
    if misses:
        miss_counter.inc(misses)
    entries_gauge.set(entries)
    bytes_gauge.set(nbytes)


def _batch_metrics():
    global _batches
    with _lock:
        if _batches is None:
            from prometheus_client import Histogram

            _batches = Histogram("zest_encoder_batch_size", "items (images or texts) per model call of the encoder",
                                 ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        return _batches


def observe_batch(kind: str, requests: int, items: int) -> None:
    """Called by the encoder's batcher after each model call (`requests` merged into `items`)."""
    _batch_metrics().labels(kind=kind).observe(items)


def _runtime_metrics():
    global _runtime
    with _lock:
        if _runtime is None:
            from prometheus_client import Gauge

            _runtime = (
                Gauge("zest_runtime_info", "the runtime that serves the CLIP model (1), next to the one asked for",
                      ["requested", "chosen", "device"], multiprocess_mode="livemax"),
                Gauge("zest_runtime_probe_seconds", "auto's start-up probe: seconds per probe round of each exact "
                      "candidate", ["runtime", "passed"], multiprocess_mode="livemax"),
            )
        return _runtime


def observe_runtime(requested: str, chosen: str, device: str, candidates: list[tuple[str, float | None, bool]]) -> None:
    """Called by the encoder after start-up: what ZEST_RUNTIME asked for, what serves, and (with auto) each
    candidate's probe time in seconds (None: not timed) and whether it passed the exact gate."""
    info, probe = _runtime_metrics()
    info.labels(requested=requested, chosen=chosen, device=device).set(1)
    for runtime, seconds, passed in candidates:
        if seconds is not None:
            probe.labels(runtime=runtime, passed=str(passed).lower()).set(seconds)
