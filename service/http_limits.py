"""Time limits on what a client sends: the request head and the request body (the two patches of library
internals that this needs, the head timeout and BentoML's request timers, are in service/compat.py).

uvicorn (what BentoML serves with) has no limit on how long a client may take to send a request:
`timeout_keep_alive` covers only the idle time *between* requests and is cancelled by the first byte of
the next one, and BentoML exposes no other knob (its `http` config has host/port/cors only). So one slow
client per connection — half-sent heads, a body trickled a byte at a time — holds sockets and file
descriptors for as long as it likes (slowloris). Two limits, both `ZEST_*` settings:

- **Head** (`ZEST_HEADER_TIMEOUT_S`): `compat.install_header_timeout` arms a timer on every connection when it
  opens and after every response; if no complete request head has arrived when it fires, the connection
  gets a 408 and is closed. ASGI middleware cannot do this (the app sees a request only once its head is
  complete), so it wraps four methods of uvicorn's HTTP protocol classes (`connection_made`,
  `data_received`, `on_response_complete`, `connection_lost`) in the public worker only.
  See https://github.com/Kludex/uvicorn/issues/157 (uvicorn's own list of missing limits).
- **Body** (`ZEST_BODY_READ_TIMEOUT_S` between two chunks, `ZEST_BODY_TIMEOUT_S` for all of it):
  `BodyTimeoutMiddleware` bounds every `receive()` of a request body; when a limit passes, the request
  fails with `RequestTimeout`, answered as 408 `{"error": ...}` with `connection: close`.

And one limit of BentoML's own, fixed: its `TimeoutMiddleware` (the `traffic.timeout` of every service,
`ZEST_TIMEOUT_S`, 300 s) arms `loop.call_later(timeout, ...)` for every request and never cancels it. An
asyncio timer keeps the contextvars context it was armed in -- the request's OpenTelemetry span, its scope
-- so every request stayed in memory for 300 s after its answer: at a few hundred requests a second, workers
grew by hundreds of MB (measured: the public worker +250 MB and the recommender +84 MB in 60 s of 32 clients
reading items; every finished span still referenced from a TimerHandle). `compat.release_request_timers()`
gives each request's timer an empty context and cancels it when the request is done.
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
