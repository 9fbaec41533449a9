"""How the public API turns exceptions into responses: every error is `{"error": "..."}` with a status.

`register(app)` installs the handlers once, on the FastAPI app in service/app.py. The rule they keep:
the client's fault is a 4xx with a message naming the problem; a model service that is down or did
not answer is a 503/504 the client may retry; anything else is a 500 whose details go to the log only.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..models.errors import Unavailable, ZestError

log = logging.getLogger("zest")


class DependencyDown(Unavailable):
    """A model service did not answer (down, restarting or still loading): 503, retry later."""

    def __init__(self, service: str, reason: str = "") -> None:
        super().__init__(f"{service} is unavailable; retry shortly")
        self.service, self.reason = service, reason


class RequestTimeout(ZestError):
    """The client took too long to send its request (service/http_limits.py): 408, connection closed."""

    status_code = 408


def _error(message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _zest_error(request: Request, exc: ZestError) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    if isinstance(exc, RequestTimeout):
        return _error(str(exc), status, connection="close")  # the rest of a slow body is not read
    if status >= 500 and not isinstance(exc, Unavailable):
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


def register(app: FastAPI) -> None:
    """Install zest's exception handlers on `app` (once, at import of service/app.py)."""
    app.add_exception_handler(ZestError, _zest_error)
    app.add_exception_handler(aiohttp.ClientConnectionError, _connection_error)
    app.add_exception_handler(asyncio.TimeoutError, _timed_out)
    app.add_exception_handler(BentoMLException, _bentoml_error)
    app.add_exception_handler(Exception, _unexpected)
