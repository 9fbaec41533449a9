"""Time limits on what a client sends, so a slow client (slowloris) cannot hold a connection for ever:
uvicorn has none, and BentoML exposes no knob for one.

- Head (`ZEST_HEADER_TIMEOUT_S`): a complete request head within the limit, else 408 and close; the patch of
  uvicorn's protocol classes this needs is `compat.install_header_timeout` (service/compat.py).
- Body (`ZEST_BODY_READ_TIMEOUT_S` between chunks, `ZEST_BODY_TIMEOUT_S` in all): `BodyTimeoutMiddleware`.
- BentoML's `TimeoutMiddleware` timers, which kept every request in memory for `ZEST_TIMEOUT_S`, are released
  by `compat.release_request_timers()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .errors import RequestTimeout

log = logging.getLogger("zest")


# -- request body -------------------------------------------------------------------------------------
class BodyTimeoutMiddleware:
    """ASGI middleware: a request body must arrive with no pause longer than `read_timeout_s` and in
    `total_timeout_s` overall, counted from when the app gets the request (its head is complete)."""

    def __init__(self, app: Any, read_timeout_s: float, total_timeout_s: float) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = time.monotonic() + self.total_timeout_s
        body_done = False

        async def bounded_receive() -> dict:
            nonlocal body_done
            if body_done:  # after the body, receive() waits for a disconnect: not ours to bound
                return await receive()
            left = deadline - time.monotonic()
            wait = min(self.read_timeout_s, left)
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.001))
            except TimeoutError:
                what = (f"no data for {self.read_timeout_s:g} s" if wait < left
                        else f"not complete after {self.total_timeout_s:g} s")
                log.warning("request body from %s timed out (%s)", (scope.get("client") or ("?",))[0], what)
                raise RequestTimeout(f"request body timed out: {what}") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded_receive, send)
