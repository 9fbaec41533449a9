"""Every patch of, or reach into, BentoML's and uvicorn's internals (open_clip's: models/compat.py).

Each `Patch` below says what it fixes, the upstream issue and the versions it was checked on. Each is applied
through `enabled(...)`, its start-up check: on a version outside that range, or when the internals it relies
on are gone, the patch is disabled with one warning naming it, and zest falls back to the library's own
behaviour (the README lists what each fallback costs). tests/test_compat.py exercises every guard.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
from typing import Any

from ..models.compat import Patch, enabled

log = logging.getLogger("zest")

UVICORN_HEADER_TIMEOUT = Patch(
    name="uvicorn request-head timeout",
    distribution="uvicorn",
    checked=">=0.54,<0.55",
    fixes="uvicorn has no limit on how long a client takes to send a request head (slowloris); zest wraps "
          "connection_made / data_received / on_response_complete / connection_lost of its HTTP protocols",
    upstream="https://github.com/Kludex/uvicorn/issues/157",
)
BENTOML_REQUEST_TIMERS = Patch(
    name="BentoML TimeoutMiddleware timers",
    distribution="bentoml",
    checked=">=1.4.39,<1.4.41",
    fixes="TimeoutMiddleware (bentoml._internal.server.http.traffic) arms call_later(timeout) per request in the "
          "request's context and never cancels it, so every request stays in memory for traffic.timeout",
    upstream="none filed (https://github.com/bentoml/BentoML/issues/5642 is another bug of the same middleware)",
)
BENTOML_REMOTE_PROXY = Patch(
    name="BentoML RemoteProxy address",
    distribution="bentoml",
    checked=">=1.4.39,<1.4.41",
    fixes="zest probes a model service's /readyz over its own connection: it needs to know that bentoml.depends "
          "gave a RemoteProxy (_bentoml_impl.client) and the address it calls (proxy.to_async.url)",
    upstream="https://github.com/bentoml/BentoML/issues/5540, https://github.com/bentoml/BentoML/issues/5544 "
             "(why zest does not rely on the proxy's own sessions)",
)
BENTOML_WORKER_CMDLINE = Patch(
    name="BentoML worker discovery",
    distribution="bentoml",
    checked=">=1.4.39,<1.4.41",
    fixes="zest finds its sibling workers (health, shutdown order, fail_start) by the command line BentoML's "
          "arbiter starts them with: `-m _bentoml_impl.worker.service ... --service-name NAME`",
    upstream="none filed (BentoML has no API listing a service's worker processes)",
)
UVICORN_SIGNAL_DRAIN = Patch(
    name="uvicorn SIGTERM drain bound",
    distribution="uvicorn",
    checked=">=0.54,<0.55",
    fixes="uvicorn in a BentoML worker waits for open requests with no time limit after SIGTERM; zest wraps the "
          "signal handler uvicorn installs (its capture_signals) and os._exit()s the worker after a deadline",
    upstream="https://github.com/bentoml/BentoML/pull/5024 (BentoML's circus graceful shutdown; no bound)",
)
BENTOML_CALLEE_ERRORS = Patch(
    name="BentoML callee error format",
    distribution="bentoml",
    checked=">=1.4.39,<1.4.41",
    fixes="a 4xx BentoMLException raised in a model service reaches the caller as the body `[{\"error\": msg}]` "
          "(api_endpoint_wrapper in _bentoml_impl/server/app.py), logged with a traceback by the logger "
          "bentoml._internal.server.http_app; zest reads the message back and filters that log line",
    upstream="https://github.com/bentoml/BentoML/issues/4802 (errors across services lost their types in 1.2)",
)
BENTOML_IMAGE_LAYER = Patch(
    name="BentoML image system layer",
    distribution="bentoml",
    checked=">=1.4.39,<1.4.41",
    fixes="bentoml.images.Image's __attrs_post_init__ (_bentoml_sdk/images.py) puts the distro's default install "
          "command (apt-get build-essential, git, gnupg2) first in every image, and runs again when the build copies "
          "the image (attrs.evolve), so the layer ran twice; zest's subclass sets only the base image",
    upstream="none filed (BentoML's Image SDK has no option to leave its default system packages out)",
)
PATCHES = (UVICORN_HEADER_TIMEOUT, BENTOML_REQUEST_TIMERS, BENTOML_REMOTE_PROXY, BENTOML_WORKER_CMDLINE,
           UVICORN_SIGNAL_DRAIN, BENTOML_CALLEE_ERRORS, BENTOML_IMAGE_LAYER)


# -- uvicorn: request-head timeout (service/http_limits.py has the body limits) ---------------------------
_PROTOCOL_METHODS = ("connection_made", "data_received", "on_response_complete", "connection_lost")


def _protocol_classes() -> list[type]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    classes: list[type] = [H11Protocol]
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


def install_header_timeout(seconds: float) -> bool:
    """Close connections that do not deliver a complete request head within `seconds` of opening or of
    the previous response. Idempotent; a second call only changes the limit. False: disabled by its guard."""
    if not enabled(UVICORN_HEADER_TIMEOUT,
                   lambda: all(callable(getattr(c, m, None)) for c in _protocol_classes() for m in _PROTOCOL_METHODS)):
        return False
    for cls in _protocol_classes():
        if "_zest_header_timeout_s" not in cls.__dict__:
            _wrap(cls)
        cls._zest_header_timeout_s = seconds  # type: ignore[attr-defined]
    return True


def _wrap(cls: Any) -> None:
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


# -- BentoML: its request timeout's timers ---------------------------------------------------------------
def _timeout_middleware() -> Any:
    from bentoml._internal.server.http import traffic

    return traffic.TimeoutMiddleware


def release_request_timers() -> bool:
    """Replace `TimeoutMiddleware.__call__` with the same logic whose timer holds no request context and is
    cancelled when the request ends; a request that ends without sending anything no longer waits for the
    timeout either. Idempotent. False: disabled by its guard (BentoML's own middleware then runs)."""
    if not enabled(BENTOML_REQUEST_TIMERS, lambda: callable(getattr(_timeout_middleware(), "_set_timer_out", None))):
        return False
    from starlette.responses import JSONResponse

    cls = _timeout_middleware()
    if getattr(cls, "_zest_releases_timers", False):
        return True

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
        def release(_: asyncio.Future) -> None:
            if not waiter.done():
                waiter.set_result(None)

        fut.add_done_callback(release)
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
    return True


# -- BentoML: the proxy bentoml.depends returns ----------------------------------------------------------
def _remote_proxy_class() -> type:
    from _bentoml_impl.client import RemoteProxy

    return RemoteProxy


def remote_address(proxy: Any) -> str | None:
    """The URL a `RemoteProxy` (a model service in another worker) calls; None for a service served in this
    process, or when the guard is off (zest then does not probe the service's health itself)."""
    if not enabled(BENTOML_REMOTE_PROXY, lambda: isinstance(_remote_proxy_class(), type)):
        return None
    if not isinstance(proxy, _remote_proxy_class()):
        return None
    url = getattr(getattr(proxy, "to_async", None), "url", None)
    return str(url) if url else None


# -- BentoML: its worker processes -----------------------------------------------------------------------
WORKER_MODULE = "_bentoml_impl.worker.service"


@functools.cache
def _worker_module_exists() -> bool:
    from importlib.util import find_spec

    return find_spec(WORKER_MODULE) is not None


def worker_discovery() -> bool:
    """Whether zest may tell BentoML's worker processes by their command lines (the guard)."""
    return enabled(BENTOML_WORKER_CMDLINE, _worker_module_exists)


def worker_service_name(cmdline: list[str]) -> str | None:
    """The BentoML service a worker process serves, from its command line; None if it is no BentoML worker (or
    worker discovery is off)."""
    if WORKER_MODULE not in cmdline or "--service-name" not in cmdline or not worker_discovery():
        return None
    i = cmdline.index("--service-name")
    return cmdline[i + 1] if i + 1 < len(cmdline) else None


def signal_drain() -> bool:
    """Whether zest may wrap uvicorn's SIGTERM handler and bound its drain (the guard; service/lifecycle.py)."""
    def captures_signals() -> bool:
        from uvicorn.server import Server

        return callable(getattr(Server, "capture_signals", None)) and callable(getattr(Server, "handle_exit", None))

    return enabled(UVICORN_SIGNAL_DRAIN, captures_signals)


# -- BentoML: user errors across the service boundary (service/errors.py) --------------------------------
API_ERROR_LOGGER = "bentoml._internal.server.http_app"  # where BentoML's `log_exception` writes


def callee_error_logger() -> logging.Logger | None:
    """The logger BentoML writes a failed API call's traceback to; None when the guard is off."""
    def has_logger() -> bool:
        from importlib.util import find_spec

        return find_spec(API_ERROR_LOGGER) is not None

    return logging.getLogger(API_ERROR_LOGGER) if enabled(BENTOML_CALLEE_ERRORS, has_logger) else None


def callee_error_body(body: Any) -> Any:
    """What a model service answered for a user error, unwrapped from BentoML's list (`[{"error": ...}]`) to the
    dict inside; `body` as it is when the guard is off."""
    if enabled(BENTOML_CALLEE_ERRORS) and isinstance(body, list) and len(body) == 1:
        return body[0]
    return body


# -- BentoML: the bento's container image (service/bento_image.py) ---------------------------------------
def _image_without_system_layer(base: Any, base_image: str) -> type:
    class RuntimeImage(base):
        """BentoML's Python image without its default system-package layer (compilers, git); `base_image` unless
        one is given."""

        def __attrs_post_init__(self) -> None:
            if not getattr(self, "base_image", ""):
                self.base_image = base_image

    return RuntimeImage


def _fields(image: Any) -> dict[str, Any]:
    return {a.name: getattr(image, a.name) for a in type(image).__attrs_attrs__}


def _only_the_layer_differs(base: type, runtime: type, base_image: str) -> bool:
    """BentoML's post-init does nothing but choose the base image and prepend one command: the subclass, which
    skips it, then builds the same image less that command, also when the build copies it (attrs.evolve: a new
    instance of the same fields, post-init included)."""
    theirs, ours = base(base_image=base_image), runtime()
    same = len(theirs.commands) == 1 and _fields(ours) == {**_fields(theirs), "commands": []}
    return (same and len(base(base_image=base_image, commands=list(theirs.commands)).commands) == 2
            and runtime(commands=[]).commands == [])


def runtime_image_class(base_image: str) -> type:
    """`bentoml.images.Image` without its default system-package layer, on `base_image`; BentoML's own class when
    the guard is off (the image then installs compilers and git, twice)."""
    import bentoml

    base = bentoml.images.Image
    runtime = _image_without_system_layer(base, base_image)
    if not enabled(BENTOML_IMAGE_LAYER, lambda: _only_the_layer_differs(base, runtime, base_image)):
        return base
    return runtime
