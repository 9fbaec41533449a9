"""All of zest's runtime configuration, in one place, read from `ZEST_*` environment variables.

| variable                  | default     | meaning                                                        |
|---------------------------|-------------|----------------------------------------------------------------|
| ZEST_MODEL                | zest-tiny   | model spec (see models/spec.py)                                 |
| ZEST_DEVICE               | auto        | auto (CUDA if present), cpu, cuda, cuda:N                       |
| ZEST_PRECISION            | auto        | auto (bf16/fp16 autocast on CUDA, fp32 on CPU), fp32, fp16, bf16 |
| ZEST_GPUS                 | 0           | GPUs the encoder service asks BentoML for (set 1 with cuda)     |
| ZEST_BATCH_SIZE           | 32          | images/texts per forward pass                                  |
| ZEST_TIMEOUT_S            | 300         | request timeout of every service (a first /classify with many labels x templates encodes them all) |
| ZEST_MAX_BATCH_SIZE       | 64          | adaptive batching: largest batch the encoder is handed         |
| ZEST_MAX_LATENCY_MS       | 10000       | adaptive batching: latency budget of one batched call          |
| ZEST_MAX_IMAGES           | 16          | images per request                                             |
| ZEST_MAX_IMAGE_BYTES      | 10485760    | bytes per image (10 MiB)                                       |
| ZEST_MAX_IMAGE_PIXELS     | 40000000    | pixels per image (decompression-bomb guard)                    |
| ZEST_MAX_LABELS           | 1000        | labels per classify request                                    |
| ZEST_MAX_LABEL_CHARS      | 200         | characters per label                                           |
| ZEST_MAX_TEXTS            | 256         | texts per /embed/text request                                  |
| ZEST_MAX_TEXT_CHARS       | 20000       | characters per text (longer is refused; within it, CLIP truncates to its context) |
| ZEST_CACHE_SIZE           | 64          | class-embedding sets kept in the LRU cache                     |
| ZEST_URL_ALLOWLIST        | (empty)     | comma-separated hosts whose image URLs may be fetched; empty = never fetch |
| ZEST_URL_TIMEOUT_S        | 10          | timeout for one allowed image fetch                            |
| ZEST_DATA_DIR             | ~/.zest     | where the recommender's item catalogue is stored (SQLite)       |
| ZEST_REC_MODEL            | (empty)     | trained ZESRec model: a BentoML model tag (`zest rec train` prints it) or a directory; empty = the shipped one |
| ZEST_HEADS                | (empty)     | adapted heads to load (`zest adapt`): BentoML model tags or head directories, comma-separated |
| ZEST_MAX_REC_ITEMS        | 1000        | items per POST /items request                                  |
| ZEST_MAX_ITEM_TEXT_CHARS  | 5000        | characters per item description                                |
| ZEST_MAX_HISTORY          | 1000        | history entries per /recommend request                         |
| ZEST_MAX_K                | 1000        | largest k for /recommend                                       |
| ZEST_MAX_CANDIDATES       | 100000      | candidate ids per /recommend request                           |
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    model: str = "zest-tiny"
    device: str = "auto"
    precision: str = "auto"
    gpus: int = 0
    batch_size: int = 32
    timeout_s: int = 300
    max_batch_size: int = 64
    max_latency_ms: int = 10_000
    max_images: int = 16
    max_image_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_labels: int = 1000
    max_label_chars: int = 200
    max_texts: int = 256
    max_text_chars: int = 20_000
    cache_size: int = 64
    url_allowlist: tuple[str, ...] = field(default_factory=tuple)
    url_timeout_s: float = 10.0
    data_dir: str = "~/.zest"
    rec_model: str = ""
    heads: tuple[str, ...] = field(default_factory=tuple)
    max_rec_items: int = 1000
    max_item_text_chars: int = 5000
    max_history: int = 1000
    max_k: int = 1000
    max_candidates: int = 100_000

    @classmethod
    def from_env(cls) -> "Settings":
        """Read every field from ZEST_<FIELD> (upper case); bad values raise ValueError naming the variable."""
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(f"ZEST_{f.name.upper()}")
            if raw is None or not raw.strip():
                continue
            try:
                if f.name == "url_allowlist":
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
                     "max_labels", "max_label_chars", "max_texts", "max_text_chars", "cache_size",
                     "max_rec_items", "max_item_text_chars", "max_history", "max_k", "max_candidates"):
            if getattr(settings, name) < 1:
                raise ValueError(f"ZEST_{name.upper()} must be >= 1")
        return settings
