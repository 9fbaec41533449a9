"""Stopping: SIGTERM drains in-flight requests within a bound, public service first, model services last;
and a model that cannot load stops the server once instead of being respawned for ever.

`install_drain(...)` (from each service's `__init__`) bounds each worker's drain by `ZEST_SHUTDOWN_TIMEOUT_S`
and keeps the model services serving until the public one has drained; `fail_start(...)` logs a load error
once and stops the whole server (`zest serve` prints it from `ZEST_FATAL_FILE` and exits 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, NoReturn

import psutil

from .compat import signal_drain, worker_service_name

log = logging.getLogger("zest")

MODEL_EXTRA_S = 5.0  # a model service waits for the public one, then gets this long for itself
FATAL_FILE_ENV = "ZEST_FATAL_FILE"  # set by `zest serve`: where a worker that cannot start writes why
START_FAILED_EXIT = 3


def sibling_workers(service_name: str) -> list[psutil.Process]:
    """Living BentoML worker processes of `service_name` under this worker's arbiter."""
    try:
        siblings = psutil.Process(os.getppid()).children()
    except psutil.Error:
        return []
    found = []
    for proc in siblings:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and worker_service_name(proc.cmdline()) == service_name:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):  # best effort before _exit
            handler.flush()


def _exit_after(seconds: float, who: str) -> None:
    def hard_exit() -> None:
        log.error("%s: still not done %.0f s after SIGTERM (ZEST_SHUTDOWN_TIMEOUT_S): exiting now", who, seconds)
        _flush_logs()
        os._exit(1)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


def _forward_when_gone(public_service: str, forward: Callable, sig: int, timeout_s: float, who: str) -> None:
    deadline = time.monotonic() + timeout_s
    waited = False
    while time.monotonic() < deadline and sibling_workers(public_service):
        waited = True
        time.sleep(0.1)
    if waited:
        log.info("%s: %s has stopped; stopping too", who, public_service)
    forward(sig, None)


def install_drain(who: str, shutdown_timeout_s: float, *, public_service: str | None = None,
                  on_term: Callable[[], Awaitable[None]] | None = None) -> bool:
    """Wrap this worker's SIGTERM/SIGINT handling. `who`: this service's name. `public_service`: for a model
    service, the service to outlive. `on_term`: a coroutine function run in the event loop at the first
    signal. Returns False (and does nothing) outside a uvicorn worker of `who` (e.g. `--development`).

    BentoML's arbiter signals every worker at once and waits up to a day; uvicorn then waits for open
    requests with no limit. So at the first signal every worker starts a deadline (`shutdown_timeout_s`,
    model services plus `MODEL_EXTRA_S`) after which it logs what it waited for and exits; the public worker
    runs `on_term` and drains; a model service keeps serving until no public worker is left, then drains,
    so every request the public service accepted can still call it. A second signal goes straight to uvicorn."""
    if threading.current_thread() is not threading.main_thread() or not signal_drain():
        return False
    try:  # only in this service's own worker: `bentoml serve --development` runs all services in one
        if worker_service_name(psutil.Process().cmdline()) != who:
            return False
    except psutil.Error:
        return False
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    if not callable(previous[signal.SIGTERM]):
        return False
    loop = asyncio.get_running_loop()
    signalled = threading.Event()

    def handler(sig: int, frame: FrameType | None) -> None:
        forward = previous[sig]
        if signalled.is_set() or not callable(forward):
            if callable(forward):
                forward(sig, frame)
            return
        signalled.set()
        bound = shutdown_timeout_s + (MODEL_EXTRA_S if public_service else 0.0)
        log.info("%s: %s received; finishing in-flight requests (at most %.0f s)", who,
                 signal.Signals(sig).name, bound)
        _exit_after(bound, who)
        if on_term is not None:
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(on_term()))
        if public_service:
            threading.Thread(target=_forward_when_gone, name="zest-drain", daemon=True,
                             args=(public_service, forward, sig, shutdown_timeout_s, who)).start()
        else:
            forward(sig, frame)

    for sig in previous:
        signal.signal(sig, handler)
    return True


def in_container() -> bool:
    """What BentoML checks before it turns worker respawning off (bentoml/serving.py)."""
    return "BENTOML_CONTAINERIZED" in os.environ or "BENTOCLOUD_DEPLOYMENT_URL" in os.environ


def _in_own_worker(who: str) -> bool:
    try:
        return worker_service_name(psutil.Process().cmdline()) == who
    except psutil.Error:
        return False


def fail_start(who: str, exc: BaseException) -> NoReturn:
    """A model service's `__init__` failed (its model cannot load): log it once and stop the server instead
    of being respawned into the same failure for ever: SIGTERM to the arbiter, which stops every worker, and
    the error in `ZEST_FATAL_FILE` for `zest serve`. In a container BentoML respawns nothing and stops the
    server itself at its next worker check. Outside a BentoML worker of `who` (tests, `--development`) the
    exception is raised as it is."""
    from ..models.errors import ZestError

    if not _in_own_worker(who):
        raise exc
    reason = str(exc) if isinstance(exc, ZestError) else f"{type(exc).__name__}: {exc}"
    log.error("%s cannot start: %s", who, reason, exc_info=None if isinstance(exc, ZestError) else exc)
    path = os.environ.get(FATAL_FILE_ENV)
    if path:
        try:
            with open(path, "a") as f:
                f.write(f"{who} cannot start: {reason}\n")
        except OSError as err:
            log.error("could not write %s=%s: %s", FATAL_FILE_ENV, path, err)
    if in_container():
        log.error("%s: exiting; BentoML does not restart it in a container and stops the server (exit code 1)", who)
    else:
        log.error("%s: stopping the server rather than restarting this worker into the same failure", who)
        try:
            os.kill(os.getppid(), signal.SIGTERM)  # the arbiter: it stops every worker, then exits
        except OSError as err:
            log.error("could not stop the server (%s); exiting this worker", err)
    _flush_logs()
    os._exit(START_FAILED_EXIT)
