"""zest's own Prometheus metrics, served on BentoML's /metrics beside its request metrics.

Created on first use inside a worker, after BentoML has set PROMETHEUS_MULTIPROC_DIR (so every worker's
values reach /metrics); the gauges sum over live workers.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_class_cache = None
_batches = None


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
