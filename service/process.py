"""What every service module of the bento reads once per process: the settings, the API keys, the resources
and the options of the model services (the callees of `Zest`).

Imported by service/app.py, service/encoder_service.py and service/recommender_service.py, so each holds the
same objects: the settings are read from the environment once per worker process.
"""

from __future__ import annotations

import logging
from typing import Any

from .auth import load_api_keys
from .settings import Settings
from .transport import RUNNER_CONNECTION

log = logging.getLogger("zest")
if log.level == logging.NOTSET:  # BentoML's server logging shows WARNING and up from other loggers
    log.setLevel(logging.INFO)   # zest's start-up, health and shutdown lines are INFO


def single_threaded_blas() -> None:
    """numpy's OpenBLAS threads busy-wait for ~0.1 s after every matrix product. In a server whose processes
    share the cores with the model's forward passes that spinning is stolen from the model: one 1x512 @
    512x1000 zero-shot product before a ViT-B-32 forward pass made the pass 74 -> 140 ms, and a repeated
    1000-label /classify cost 1.55 x /embed/image (issue #12). zest's products are small or memory-bound
    (scores, exact scans), so every service process runs BLAS on its calling thread only; torch keeps its own
    intra-op threads."""
    import numpy  # noqa: F401 - threadpoolctl limits the BLAS libraries loaded so far: numpy's first
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


single_threaded_blas()
SETTINGS = Settings.from_env()
API_KEYS = load_api_keys(SETTINGS.api_keys)
RESOURCES: dict[str, Any] = {"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"}

PUBLIC_SERVICE = "zest"
# On the model services (the callees): their callers' BentoML client keeps one connection session for
# good instead of closing it under running calls every 100 calls / 300 s. Why: service/transport.py.
CALLEE = {"traffic": {"timeout": SETTINGS.timeout_s}, "runner_connection": RUNNER_CONNECTION}
