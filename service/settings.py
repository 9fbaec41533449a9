"""All of zest's runtime configuration, in one place, read from `ZEST_*` environment variables.

| variable                  | default     | meaning                                                        |
|---------------------------|-------------|----------------------------------------------------------------|
| ZEST_MODEL                | zest-tiny   | model spec (see models/spec.py)                                 |
| ZEST_DEVICE               | auto        | auto (CUDA if present), cpu, cuda, cuda:N                       |
| ZEST_PRECISION            | auto        | auto (bf16/fp16 autocast on CUDA, fp32 on CPU), fp32, fp16, bf16 (on CPU: ZEST_RUNTIME=bf16, gated) |
| ZEST_RUNTIME              | auto        | auto (the fastest runtime that keeps fp32's features on this machine, timed once and kept under ZEST_DATA_DIR/runtimes: models/auto_runtime.py; torch on CUDA), torch, or a CPU fast path (onnx, onnx-int8, int8, openvino, bf16: CPUs with AVX512-BF16/AMX only) admitted only if it passes the start-up fidelity gate (models/runtimes.py; ONNX exports cached under ZEST_DATA_DIR/runtimes) |
| ZEST_RUNTIME_PROBE_TIMEOUT_S | 600     | a first start of auto, onnx, onnx-int8 or openvino on CPU (nothing cached yet) exports and, for auto, probes in a child process for at most this long, then loads only what serves from the cache; a child that fails is logged and the work is done in the encoder process; one that times out is killed and torch serves, logged (models/runtime_child.py) |
| ZEST_GPUS                 | 0           | GPUs the encoder service asks BentoML for (set 1 with cuda)     |
| ZEST_BATCH_SIZE           | 32          | images/texts per forward pass                                  |
| ZEST_TIMEOUT_S            | 300         | request timeout of every service (a first /classify with many labels x templates encodes them all) |
| ZEST_MAX_BATCH_SIZE       | 64          | most images merged into one model call (calls never wait to be merged: service/batching.py) |
| ZEST_MAX_IMAGES           | 16          | images per request                                             |
| ZEST_MAX_IMAGE_BYTES      | 10485760    | bytes per image (10 MiB)                                       |
| ZEST_MAX_IMAGE_PIXELS     | 40000000    | pixels per image (decompression-bomb guard)                    |
| ZEST_MAX_LABELS           | 1000        | labels per classify request                                    |
| ZEST_MAX_LABEL_CHARS      | 200         | characters per label                                           |
| ZEST_MAX_TEXTS            | 256         | texts per /embed/text request                                  |
| ZEST_MAX_TEXT_CHARS       | 20000       | characters per text (longer is refused; within it, CLIP truncates to its context) |
| ZEST_CLASS_CACHE_MB       | 256         | memory for cached class embeddings (per label and template set; LRU), also kept on disk under ZEST_DATA_DIR/class-cache |
| ZEST_URL_ALLOWLIST        | (empty)     | comma-separated hosts whose image URLs may be fetched, if every address they resolve to is public; empty = never fetch |
| ZEST_URL_ALLOW_PRIVATE    | (empty)     | allow-listed hosts that may resolve to loopback/private addresses (on-premises image stores; service/fetch.py) |
| ZEST_URL_TIMEOUT_S        | 10          | timeout for one allowed image fetch                            |
| ZEST_DATA_DIR             | ~/.zest     | where the embedded vector store (catalogue, collections) and the class-embedding cache keep their SQLite files |
| ZEST_VECTOR_STORE         | embedded    | embedded, milvus://HOST:PORT[?index=HNSW&db=DB], milvus+https://HOST, milvus-lite:DIR (store/__init__.py) |
| ZEST_MILVUS_TOKEN         | (empty)     | Milvus credentials (user:password or an API key)                |
| ZEST_ANN_MIN_ROWS         | 100000      | embedded store: live rows from which a collection is searched with an IVF index instead of an exact scan |
| ZEST_ANN_NPROBE           | 192         | embedded store: IVF lists probed per search (recall vs latency; benchmarks/bench_store.py) |
| ZEST_REC_WORKERS          | 1           | recommender service workers; more than 1 needs a shared store (milvus://) |
| ZEST_MAX_COLLECTION_K     | 1000        | largest k for a collection search                              |
| ZEST_MAX_METADATA_BYTES   | 4096        | JSON bytes of one collection item's metadata                   |
| ZEST_REC_MODEL            | (empty)     | trained ZESRec model: a BentoML model tag (`zest rec train` prints it) or a directory; empty = the shipped one |
| ZEST_HEADS                | (empty)     | adapted heads to load (`zest adapt`): BentoML model tags or head directories, comma-separated |
| ZEST_MAX_REC_ITEMS        | 1000        | items per POST /items request                                  |
| ZEST_MAX_ITEM_TEXT_CHARS  | 5000        | characters per item description                                |
| ZEST_TEXT_CACHE_SIZE      | 20000       | item/history texts whose MiniLM embeddings the recommender keeps in memory (LRU) |
| ZEST_MAX_HISTORY          | 1000        | history entries per /recommend request                         |
| ZEST_MAX_K                | 1000        | largest k for /recommend                                       |
| ZEST_MAX_CANDIDATES       | 100000      | candidate ids per /recommend request                           |
| ZEST_PROBE_TIMEOUT_S      | 0.5         | /readyz asks every model service, in parallel, for at most this long (then 503) |
| ZEST_LIVENESS_GRACE_S     | 60          | /livez fails once a model service that was up has not answered for this long |
| ZEST_SHUTDOWN_TIMEOUT_S   | 30          | SIGTERM: in-flight requests get this long to finish, then the worker exits |
| ZEST_HEADER_TIMEOUT_S     | 10          | a client must send a request's line and headers within this long (else closed) |
| ZEST_BODY_READ_TIMEOUT_S  | 10          | longest pause while a request body is being received (else 408) |
| ZEST_BODY_TIMEOUT_S       | 60          | a whole request body must arrive within this long (else 408)  |
| ZEST_API_KEYS             | (empty)     | API keys: comma-separated, or the path of a file (starts with / ./ ../ ~): one key per line (all admin), or YAML/JSON with each key's name, scope, collections and rate limit; empty = no key needed (service/auth.py, service/keyfile.py) |
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Settings:
    model: str = "zest-tiny"
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"
    runtime_probe_timeout_s: float = 600.0
    gpus: int = 0
    batch_size: int = 32
    timeout_s: int = 300
    max_batch_size: int = 64
    max_images: int = 16
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_labels: int = 1000
    max_label_chars: int = 200
    max_texts: int = 256
    max_text_chars: int = 20_000
    class_cache_mb: int = 256
    url_allowlist: tuple[str, ...] = field(default_factory=tuple)
    url_allow_private: tuple[str, ...] = field(default_factory=tuple)
    url_timeout_s: float = 10.0
    data_dir: str = "~/.zest"
    rec_model: str = ""
    heads: tuple[str, ...] = field(default_factory=tuple)
    max_rec_items: int = 1000
    max_item_text_chars: int = 5000
    text_cache_size: int = 20_000
    max_history: int = 1000
    max_k: int = 1000
    max_candidates: int = 100_000
    vector_store: str = "embedded"
    milvus_token: str = ""
    ann_min_rows: int = 100_000
    ann_nprobe: int = 192
    rec_workers: int = 1
    max_collection_k: int = 1000
    max_metadata_bytes: int = 4096
    probe_timeout_s: float = 0.5
    liveness_grace_s: float = 60.0
    shutdown_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    body_read_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    api_keys: str = field(default="", repr=False)  # secrets: never in a repr or a log line

    @property
    def runtime_cache_dir(self) -> str:
        """Where ONNX exports and `auto`'s decisions are kept (models/onnx_runtime.py, models/auto_runtime.py)."""
        return os.path.join(os.path.expanduser(self.data_dir), "runtimes")

    @classmethod
    def from_env(cls) -> Settings:
        """Read every field from ZEST_<FIELD> (upper case); bad values raise ValueError naming the variable."""
        values: dict[str, Any] = {}  # each converted to its field's type below
        for f in dataclasses.fields(cls):
            raw = os.environ.get(f"ZEST_{f.name.upper()}")
            if raw is None or not raw.strip():
                continue
            try:
                if f.name in ("url_allowlist", "url_allow_private"):
                    values[f.name] = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
                elif f.name == "heads":
                    values[f.name] = tuple(dict.fromkeys(h.strip() for h in raw.split(",") if h.strip()))
                elif f.type in ("int", int):
                    values[f.name] = int(raw)
                elif f.type in ("float", float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw.strip()
            except ValueError:
                raise ValueError(f"ZEST_{f.name.upper()}={raw!r} is not a valid {f.type}") from None
        settings = cls(**values)
        for name in ("timeout_s", "batch_size", "max_batch_size", "max_images", "max_image_bytes", "max_image_pixels",
                     "max_labels", "max_label_chars", "max_texts", "max_text_chars", "class_cache_mb",
                     "max_rec_items", "max_item_text_chars", "text_cache_size", "max_history", "max_k", "max_candidates",
                     "ann_min_rows", "ann_nprobe", "rec_workers", "max_collection_k", "max_metadata_bytes"):
            if getattr(settings, name) < 1:
                raise ValueError(f"ZEST_{name.upper()} must be >= 1")
        for f in dataclasses.fields(cls):
            if f.type in ("float", float) and not getattr(settings, f.name) > 0:
                raise ValueError(f"ZEST_{f.name.upper()} must be > 0")
        from .fetch import host_allowed

        outside = [h for h in settings.url_allow_private
                   if not (h in settings.url_allowlist or host_allowed(h.lstrip("."), settings.url_allowlist))]
        if outside:
            raise ValueError(f"ZEST_URL_ALLOW_PRIVATE names {', '.join(outside)}, not in ZEST_URL_ALLOWLIST: a host "
                             "must be allow-listed to be fetched at all")
        from ..store import check_spec, is_shared
        from .auth import load_api_keys

        load_api_keys(settings.api_keys)  # a missing or empty key file stops the start, naming the file only

        check_spec(settings.vector_store)
        if settings.rec_workers > 1 and not is_shared(settings.vector_store):
            raise ValueError("ZEST_REC_WORKERS > 1 needs a store every worker shares: set ZEST_VECTOR_STORE="
                             "milvus://HOST:PORT (the embedded store and milvus-lite files have one writer)")
        return settings
