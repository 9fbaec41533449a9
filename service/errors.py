"""How the public API turns exceptions into responses: every error is `{"error": "..."}` with a status.

`register(app)` installs the handlers on the FastAPI app: the client's fault is a 4xx naming the problem, a
model service that is down or silent a 503 (with `Retry-After`) or 504, anything else a 500 whose details go to
the log only; `ErrorShapeMiddleware` gives BentoML's own responses outside the app the same shape. A user error
raised in a model service reaches the client with its status and message (`user_errors_to_caller` there,
`from_callee` here, one mapping `USER_ERRORS`): never retried, never a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import aiohttp
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..models.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    ZestError,
)
from .compat import callee_error_body, callee_error_logger

log = logging.getLogger("zest")
RETRY_AFTER_S = 5  # a 503's Retry-After: a respawned model worker is back within seconds (zest-tiny: ~5 s)


class DependencyDown(Unavailable):
    """A model service did not answer (down, restarting or still loading): 503, retry later."""

    def __init__(self, service: str, reason: str = "") -> None:
        super().__init__(f"{service} is unavailable; retry shortly")
        self.service, self.reason = service, reason


class RequestTimeout(ZestError):
    """The client took too long to send its request (service/http_limits.py): 408, connection closed."""

    status_code = 408


class UnsupportedMediaType(InvalidInput):
    """A request body in a content type the endpoint does not read: 415."""

    status_code = 415


# -- user errors across the service boundary ---------------------------------------------------------------
# BentoML 1.4 answers a callee's `BentoMLException` with a 4xx `error_code` (but 401/403) with that status and the
# body `[{"error": str(exc)}]`, anything else without its message; the caller's client raises
# `BentoMLException.error_mapping.get(status)(body, error_code=status)` (service/compat.py, BENTOML_CALLEE_ERRORS).
USER_ERRORS: dict[int, type[InvalidInput]] = {
    cls.status_code: cls for cls in (InvalidInput, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType)}
UNCARRIED = (401, 403)  # 4xx statuses BentoML answers without the exception's message
# A 5xx reaches the caller without its message (BentoML replaces it); a 507 has one meaning in zest, so the
# caller says it again (the callee's log has the details).
STORAGE_FULL = ("the write could not be stored: the disk of the data directory is full or read-only; nothing was "
                "stored. Free space in (or make writable) the data directory, then retry")


class CalleeUserError(BentoMLException):
    """A zest user error (4xx) raised in a model service: BentoML answers the caller with its status and
    message (`from_callee` turns it back into the zest error there)."""

    def __init__(self, exc: ZestError) -> None:
        super().__init__(str(exc), error_code=HTTPStatus(exc.status_code))


@contextlib.contextmanager
def user_errors_to_caller() -> Iterator[None]:
    """Around a model service's work: a zest user error (a 4xx) leaves as `CalleeUserError`; anything else
    leaves as it is (a 500 for the caller)."""
    try:
        yield
    except ZestError as exc:
        status = getattr(exc, "status_code", 500)
        if (not 400 <= status < 500 or status in UNCARRIED) and not isinstance(exc, InsufficientStorage):
            raise
        raise CalleeUserError(exc) from exc


def from_callee(exc: BaseException) -> ZestError | None:
    """The zest user error a model service raised, from what the caller's BentoML client raised for it; None
    if `exc` is anything else (a failure of the call, or an error BentoML made itself)."""
    if not isinstance(exc, BentoMLException):
        return None
    status = int(exc.error_code)
    if status == InsufficientStorage.status_code:
        return InsufficientStorage(STORAGE_FULL)
    if not 400 <= status < 500 or status in UNCARRIED:
        return None
    try:
        body = json.loads(exc.message)
    except (TypeError, ValueError):
        return None
    body = callee_error_body(body)  # BentoML 1.4 answers the dict inside a list
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)):
        return None  # e.g. BentoML's own validation error: {"error", "detail"}
    error = USER_ERRORS.get(status, InvalidInput)(body["error"])
    error.status_code = status
    return error


class _HideCalleeUserErrors(logging.Filter):
    """BentoML logs every exception of an API method at ERROR with its traceback; a user error is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], CalleeUserError))


def hide_callee_user_errors() -> None:
    """In a model service's worker: leave the user errors it hands its caller out of its log (idempotent)."""
    logger = callee_error_logger()  # BentoML's, where `log_exception` writes; None: the compat guard is off
    if logger is not None and not any(isinstance(f, _HideCalleeUserErrors) for f in logger.filters):
        logger.addFilter(_HideCalleeUserErrors())


def _error(message: str, status: int, **headers: str) -> JSONResponse:
    if status == 503:
        headers.setdefault("retry-after", str(RETRY_AFTER_S))
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _zest_error(request: Request, exc: ZestError) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    if isinstance(exc, RequestTimeout):
        return _error(str(exc), status, connection="close")  # the rest of a slow body is not read
    if status >= 500 and not isinstance(exc, (Unavailable, InsufficientStorage)):
        log.error("request failed", exc_info=exc)
        return _error("internal error; see the server log", status)
    return _error(str(exc), status)


async def _connection_error(request: Request, exc: Exception) -> JSONResponse:
    # service/transport.py turns transport failures into DependencyDown; this is the safety net.
    log.error("internal service unreachable: %s: %s", type(exc).__name__, exc)
    return _error("a model service is unavailable; retry shortly", 503)


async def _timed_out(request: Request, exc: Exception) -> JSONResponse:
    log.error("a model service did not answer in time (%s)", type(exc).__name__)
    return _error("a model service did not answer in time; retry later or with a smaller request", 504)


async def _bentoml_error(request: Request, exc: BentoMLException) -> JSONResponse:
    status = int(getattr(exc, "error_code", 500))
    if status == 503:  # a model service refused the call (overloaded or not ready)
        return _error("a model service is unavailable; retry shortly", 503)
    log.error("internal service call failed (%s)", status, exc_info=exc)
    return _error("internal error; see the server log", 500)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return _error("internal error; see the server log", 500)


def route_error_message(status: int, method: str, path: str, detail: str = "", allow: str = "") -> str:
    """The message of an error that routing made (no route, wrong method) or a bare HTTP status."""
    if status == 404 and detail in ("", "Not Found"):
        return f"no such endpoint: {method} {path} (the API is described at /docs.json)"
    if status == 405:
        allowed = f"; allowed: {allow}" if allow else ""
        return f"method {method} is not allowed on {path}{allowed}"
    if detail:
        return detail
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of the path, not only those of the route that matched first
        from .openapi import allowed_methods

        methods = allowed_methods(request.app.openapi(), request.url.path)
        if methods:
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"} | {"Allow": ", ".join(methods)}
    message = route_error_message(exc.status_code, request.method, request.url.path, str(exc.detail or ""),
                                  headers.get("Allow", headers.get("allow", "")))
    return _error(message, exc.status_code, **headers)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """The 400's message for pydantic's (or FastAPI's) errors: each field (`items.0.id`) and what is wrong."""
    parts = []
    for e in errors[:5]:
        loc = [str(p) for p in e.get("loc", ())]
        loc = loc[1:] if loc[:1] in (["body"], ["path"], ["query"]) else loc
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # every body (service/http_input.py) and path parameter, validated by the route's pydantic declarations
    return _error(validation_message(exc.errors()), 400)


def register(app: FastAPI) -> None:
    """Install zest's exception handlers on `app` (once, at import of service/app.py)."""
    # Starlette types every handler as taking `Exception`; each of these takes the class it is registered for
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ZestError, _zest_error)  # type: ignore[arg-type]
    app.add_exception_handler(aiohttp.ClientConnectionError, _connection_error)
    app.add_exception_handler(asyncio.TimeoutError, _timed_out)
    app.add_exception_handler(BentoMLException, _bentoml_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


class ErrorShapeMiddleware:
    """ASGI middleware around the whole public service (BentoML's routes too): an error response (>= 400) that
    is not JSON -- BentoML's plain-text 404 for a path no route has, 405 on its probes, the probes' 503 --
    becomes `{"error": "..."}` with the same status and headers; a 503 gets `Retry-After`. JSON errors and
    HEAD requests pass untouched."""

    MAX_TEXT = 2000  # characters of a plain-text body kept as the message

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":
            return await self.app(scope, receive, send)
        held: dict | None = None
        body = bytearray()

        async def shaped_send(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                content_type = headers.get(b"content-type", b"").split(b";")[0].strip()
                if message["status"] >= 400 and content_type != b"application/json":
                    held = message  # rewritten once the whole (small) body is in
                    return
                return await send(message)
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            await send_shaped(held, bytes(body))

        async def send_shaped(start: dict, text: bytes) -> None:
            status = start["status"]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-type", b"content-length")]
            allow = next((v.decode("latin-1") for k, v in headers if k.lower() == b"allow"), "")
            detail = text.decode("utf-8", "replace").strip()[:self.MAX_TEXT]
            message = route_error_message(status, scope.get("method", "GET"), scope.get("path", ""), detail, allow)
            if status == 503 and not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
            payload = json.dumps({"error": message}).encode()
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        await self.app(scope, receive, shaped_send)
