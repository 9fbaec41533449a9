"""The served recommender's item texts, embedded by the encoder service (issue #24): MiniLM runs in
`ClipEncoderService.encode_item_texts`, a process that holds torch already, so the recommender imports none.

`EncoderItemTexts` is the `embed` of the recommender's `TextEncoder` (models/rec/text.py): the cache stays in the
recommender, and only the texts it has not seen cross. Calls are idempotent: a transport failure is sent again;
while the recommender starts (its catalogue may re-embed before the encoder is up) they wait for the encoder.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import httpx
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from .errors import DependencyDown, from_callee

log = logging.getLogger("zest")

SERVICE = "zest-clip-encoder"
METHOD = "encode_item_texts"
ATTEMPTS = 3  # once started: a dropped connection is sent again this many times in all
BACKOFF_CAP_S = 1.0


def _retryable(exc: BaseException) -> bool:
    """No answer from the encoder (not connected, connection dropped, not ready); BentoML's own timeout is the
    service's request timeout and is not repeated."""
    if isinstance(exc, httpx.TimeoutException):
        return False
    return isinstance(exc, (httpx.TransportError, ServiceUnavailable, ConnectionError))


class EncoderItemTexts:
    """``(texts) -> (n, 384) float32`` from the encoder service, through the proxy `bentoml.depends` gives."""

    def __init__(self, proxy: Any, start_wait_s: float) -> None:
        self.proxy = proxy
        self.start_wait_s = start_wait_s
        self.starting = True  # the owner sets False once started: then ATTEMPTS, no waiting for the encoder

    def _send(self, texts: list[str]) -> Any:
        client = getattr(self.proxy, "to_sync", None)  # a served dependency: BentoML's RemoteProxy
        return client.call(METHOD, texts) if client is not None else getattr(self.proxy, METHOD)(texts)

    def __call__(self, texts: list[str]) -> np.ndarray:
        deadline = time.monotonic() + self.start_wait_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return np.asarray(self._send(list(texts)), dtype=np.float32)
            except Exception as exc:
                user_error = from_callee(exc)
                if user_error is not None:
                    raise user_error from None
                more = time.monotonic() < deadline if self.starting else attempt < ATTEMPTS
                if not (_retryable(exc) and more):
                    log.error("%s.%s failed (attempt %d): %s: %s", SERVICE, METHOD, attempt, type(exc).__name__, exc)
                    raise DependencyDown(SERVICE, f"{type(exc).__name__}: {exc}") from exc
                time.sleep(random.uniform(0, min(BACKOFF_CAP_S, 0.05 * 2**attempt)))
