"""Time limits on what a client sends: the request head and the request body.

uvicorn (what BentoML serves with) has no limit on how long a client may take to send a request:
`timeout_keep_alive` covers only the idle time *between* requests and is cancelled by the first byte of
the next one, and BentoML exposes no other knob (its `http` config has host/port/cors only). So one slow
client per connection — half-sent heads, a body trickled a byte at a time — holds sockets and file
descriptors for as long as it likes (slowloris). Two limits, both `ZEST_*` settings:

- **Head** (`ZEST_HEADER_TIMEOUT_S`): `install_header_timeout` arms a timer on every connection when it
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
reading items; every finished span still referenced from a TimerHandle). `release_request_timers()` gives
each request's timer an empty context and cancels it when the request is done.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from typing import Any

from .errors import RequestTimeout

log = logging.getLogger("zest")


# -- request head -------------------------------------------------------------------------------------
def _protocol_classes() -> list[type]:
    classes = []
    from uvicorn.protocols.http.h11_impl import H11Protocol

    classes.append(H11Protocol)
    try:  # used instead of h11 when httptools is installed (uvicorn[standard])
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        classes.append(HttpToolsProtocol)
    except ImportError:
        pass
    return classes


def _between_requests(proto: Any) -> bool:
    """No request in progress: waiting for (the rest of) a request head, or idle on keep-alive."""
    return proto.cycle is None or proto.cycle.response_complete


def _408(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def install_header_timeout(seconds: float) -> None:
    """Close connections that do not deliver a complete request head within `seconds` of opening or of
    the previous response. Idempotent; a second call only changes the limit."""
    for cls in _protocol_classes():
        if "_zest_header_timeout_s" not in cls.__dict__:
            _wrap(cls)
        cls._zest_header_timeout_s = seconds


def _wrap(cls: type) -> None:
    made, received, complete, lost = (cls.connection_made, cls.data_received, cls.on_response_complete,
                                      cls.connection_lost)

    def disarm(self: Any) -> None:
        timer = self.__dict__.pop("_zest_head_timer", None)
        if timer is not None:
            timer.cancel()

    def expire(self: Any) -> None:
        self.__dict__.pop("_zest_head_timer", None)
        if not _between_requests(self) or self.transport.is_closing():
            return
        if self.__dict__.get("_zest_head_bytes"):  # part of a head arrived: say why we hang up
            self.transport.write(_408(f"request head not received within {cls._zest_header_timeout_s:g} s"))
        self.transport.close()

    def arm(self: Any) -> None:
        disarm(self)
        self._zest_head_bytes = 0
        self._zest_head_timer = self.loop.call_later(cls._zest_header_timeout_s, expire, self)

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        arm(self)

    def data_received(self: Any, data: bytes) -> None:
        received(self, data)
        if "_zest_head_timer" in self.__dict__:
            if _between_requests(self):
                self._zest_head_bytes += len(data)
            else:  # a complete head: the body, if any, is BodyTimeoutMiddleware's business
                disarm(self)

    def on_response_complete(self: Any) -> None:
        complete(self)
        if not self.transport.is_closing() and _between_requests(self):
            arm(self)

    def connection_lost(self: Any, exc: Exception | None) -> None:
        disarm(self)
        lost(self, exc)

    cls.connection_made, cls.data_received = connection_made, data_received
    cls.on_response_complete, cls.connection_lost = on_response_complete, connection_lost


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


# -- BentoML's request timeout ------------------------------------------------------------------------
def release_request_timers() -> None:
    """Replace `TimeoutMiddleware.__call__` of BentoML (bentoml/_internal/server/http/traffic.py) with the
    same logic whose timer holds no request context and is cancelled when the request ends (module doc).
    Also: a request that ends without sending anything no longer waits for the timeout. Idempotent."""
    from bentoml._internal.server.http import traffic
    from starlette.responses import JSONResponse

    cls = traffic.TimeoutMiddleware
    if getattr(cls, "_zest_releases_timers", False):
        return

    async def __call__(self: Any, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

        async def _send(message: dict) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send))
        fut.add_done_callback(lambda _: waiter.done() or waiter.set_result(None))
        try:
            try:
                await waiter
            except TimeoutError:  # asyncio.TimeoutError, since 3.11
                if fut.cancel():
                    resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                    await resp(scope, receive, send)
            else:
                await fut
        finally:
            timer.cancel()

    cls.__call__ = __call__
    cls._zest_releases_timers = True
