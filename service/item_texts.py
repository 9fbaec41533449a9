"""The served recommender's item texts, embedded by the encoder service (issue #24): MiniLM runs in
`ClipEncoderService.encode_item_texts`, a process that holds torch already, so the recommender imports none.

`EncoderItemTexts` is the `embed` of the recommender's `TextEncoder` (models/rec/text.py): the cache stays in the
recommender, and only the texts it has not seen cross. Calls are idempotent: a transport failure is sent again.
BentoML's sync client runs the call on the worker's event loop, so it works from an API method's thread, not
from the service's `__init__`: while the recommender starts (a catalogue re-embedded for a new item model), the
texts are embedded by MiniLM in this process, once, and the process holds torch until it restarts (logged).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from bentoml.exceptions import ServiceUnavailable

from .errors import DependencyDown, from_callee
from .transport import is_transient

log = logging.getLogger("zest")

SERVICE = "zest-clip-encoder"
METHOD = "encode_item_texts"
ATTEMPTS = 3  # once started: a dropped connection is sent again this many times in all
BACKOFF_CAP_S = 1.0


def _retryable(exc: BaseException) -> bool:
    """No answer from the encoder (not connected, connection dropped: service/transport.py's rule, or not ready);
    BentoML's own timeout is the service's request timeout and is not repeated."""
    return is_transient(exc) or isinstance(exc, ServiceUnavailable)


def _local_minilm() -> Callable[[list[str]], np.ndarray]:
    from ..models.rec.text import MiniLM

    return MiniLM().encode


class EncoderItemTexts:
    """``(texts) -> (n, 384) float32`` from the encoder service, through the proxy `bentoml.depends` gives;
    while `starting`, from `local` (default: MiniLM in this process, built on first use)."""

    def __init__(self, proxy: Any, local: Callable[[], Callable[[list[str]], np.ndarray]] = _local_minilm) -> None:
        self.proxy = proxy
        self.starting = True  # the owner sets False once its __init__ is done
        self._local_factory = local
        self._local: Callable[[list[str]], np.ndarray] | None = None

    def _send(self, texts: list[str]) -> Any:
        client = getattr(self.proxy, "to_sync", None)  # a served dependency: BentoML's RemoteProxy
        return client.call(METHOD, texts) if client is not None else getattr(self.proxy, METHOD)(texts)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.starting:
            if self._local is None:
                log.warning("zest-recommender: re-embedding the catalogue at start with MiniLM in this process "
                            "(the encoder service cannot be called before the service has started); this "
                            "worker holds torch until it restarts")
                self._local = self._local_factory()
            return np.asarray(self._local(list(texts)), dtype=np.float32)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return np.asarray(self._send(list(texts)), dtype=np.float32)
            except Exception as exc:
                user_error = from_callee(exc)
                if user_error is not None:
                    raise user_error from None
                if not (_retryable(exc) and attempt < ATTEMPTS):
                    log.error("%s.%s failed (attempt %d): %s: %s", SERVICE, METHOD, attempt, type(exc).__name__, exc)
                    raise DependencyDown(SERVICE, f"{type(exc).__name__}: {exc}") from exc
                time.sleep(random.uniform(0, min(BACKOFF_CAP_S, 0.05 * 2**attempt)))
        raise AssertionError("unreachable")
