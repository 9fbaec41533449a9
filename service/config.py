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

SETTINGS = Settings.from_env()
API_KEYS = load_api_keys(SETTINGS.api_keys)
RESOURCES: dict[str, Any] = {"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"}

PUBLIC_SERVICE = "zest"
# On the model services (the callees): their callers' BentoML client keeps one connection session for
# good instead of closing it under running calls every 100 calls / 300 s. Why: service/transport.py.
CALLEE = {"traffic": {"timeout": SETTINGS.timeout_s}, "runner_connection": RUNNER_CONNECTION}
