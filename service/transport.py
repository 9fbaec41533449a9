"""Calls from the public `Zest` service to the model services, and what zest knows about their health.

`Dependency` wraps the proxy `bentoml.depends` gives (read through service/compat.py): calls with retries for
faults (idempotent calls only, after a readiness probe), a user error raised again as itself, and health from
`/readyz` probes and the process table; `Dependencies` is readiness and liveness over all of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any
from urllib.parse import unquote, urlparse

import aiohttp

from .compat import remote_address, worker_discovery
from .errors import DependencyDown, from_callee
from .lifecycle import in_container, sibling_workers

log = logging.getLogger("zest")

# Set on the *callee* services (`@bentoml.service(runner_connection=...)`): never replace the session.
# BentoML's client replaces its aiohttp session every `max_requests` calls / `max_age` s and closes the old
# one under running calls (they fail or hang); BentoML reads these from the callee's settings when it builds
# the proxy. Upstream: https://github.com/bentoml/BentoML/issues/5540, issues/5544, pull/5541 (merged, the
# race stays), pull/5698 (open). Remove once a release no longer closes a session in use (the no-fault load
# test in tests/test_transport.py says whether it does). The v2 config schema wants an int and a float, both
# > 0: "never" is a very large number.
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 1e12}

ATTEMPTS = 3
SLOW_PROBES = 3  # timeouts in a row from a worker that answered before, before it counts as down
BACKOFF_BASE_S = 0.05  # full jitter: sleep uniform(0, min(cap, base * 2**attempt))
BACKOFF_CAP_S = 1.0

_AIOHTTP_CLOSED = ("Connection closed.", "Session is closed")  # aiohttp RuntimeErrors of a closed transport


CONTAINER_HINT = ("; in a container BentoML does not restart a dead worker (BENTOML_CONTAINERIZED): it stops "
                  "the whole server at its next worker check (every 10 s), exit code 1, for the orchestrator "
                  "to restart")


def is_transient(exc: BaseException, *, own_deadline: bool = False) -> bool:
    """A failure of the connection rather than of the call: the same call may succeed if sent again.
    A timeout counts only when it is a short deadline of our own (`own_deadline`); BentoML's own timeout is
    the service's request timeout, and repeating a call that ran that long helps nobody."""
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp.ServerTimeoutError
        return own_deadline
    if isinstance(exc, aiohttp.ClientConnectionError):  # ServerDisconnected, ClientConnector, ClientOSError
        return True
    return isinstance(exc, RuntimeError) and str(exc) in _AIOHTTP_CLOSED


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - some aiohttp errors cannot print themselves half-built
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


class Dependency:
    """One model service as `Zest` sees it: calls, and its health.

    Retries are for faults, not for the transport: a transient failure (a dropped connection, aiohttp's
    `Connection closed.`, our own short deadline) is repeated only if the call is idempotent or was never
    sent (no connection), at most `ATTEMPTS` times after a jittered back-off, and only once the service
    answers a probe, so a dead service costs one probe, not a request timeout. Any other failure is
    `DependencyDown` (503); a user error the service answers (a 4xx) is raised again at once as the zest
    error it was (service/errors.py, `from_callee`).

    Health: `probe()` asks `/readyz` over a fresh connection. A dead or loading worker does not answer (the
    arbiter keeps the socket), so on this host the probe also reads the service's worker processes: no
    living worker is down at once; a timeout from the worker that answered last counts as busy for up to
    `SLOW_PROBES` probes (readiness must not flap on a loaded machine); a respawned worker is down until it
    answers. After SIGTERM (`stopping`) BentoML has already deleted its Unix sockets' directory, so a
    service counts as up while its worker lives and a call that cannot connect waits for a pooled connection.
    """

    def __init__(self, name: str, proxy: Any, probe_timeout_s: float) -> None:
        self.name = name
        self.proxy = proxy
        self.probe_timeout_s = probe_timeout_s
        self.down_since: float | None = None  # monotonic time of the first failed probe; None = up
        self.ever_up = False
        self._url: str = remote_address(proxy) or ""  # "": served in this process (or the compat guard is off)
        self._remote = bool(self._url)
        self._session: aiohttp.ClientSession | None = None
        self._probing: asyncio.Future[bool] | None = None
        self._abandon: asyncio.Event | None = None
        self._probe_failure = ""
        self._ok_pids: frozenset[int] | None = None  # the workers that answered the last good probe
        self._slow = 0
        self.stopping = False  # this worker got SIGTERM: no new connections (see the class doc)

    # -- health -------------------------------------------------------------------------------------
    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            parsed = urlparse(self._url)
            if parsed.scheme in ("file", "unix"):  # BentoML's Unix socket between services
                connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=unquote(parsed.path),
                                                                         force_close=True)
                base = "http://127.0.0.1"
            else:
                connector = aiohttp.TCPConnector(force_close=True)
                base = f"http://{parsed.netloc}" if parsed.scheme == "tcp" else self._url
            # A fresh connection per probe: a pooled one could belong to a worker that is gone.
            self._session = aiohttp.ClientSession(base_url=base, connector=connector)
        return self._session

    async def _probe_once(self) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=self.probe_timeout_s)
            async with self._probe_session().get("/readyz", timeout=timeout) as resp:
                self._probe_failure = "" if resp.status == 200 else f"/readyz answered {resp.status}"
        except TimeoutError:
            self._probe_failure = f"no answer within {self.probe_timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            self._probe_failure = f"{type(exc).__name__}: {exc}"
        return not self._probe_failure

    async def probe(self) -> bool:
        """True if the service answers its /readyz within `probe_timeout_s`. Concurrent callers share
        one probe. Logs each change between up and down."""
        if not self._remote:
            return True  # served in this process
        if self.stopping:
            return self.worker_alive()
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._check())
            self._probing.add_done_callback(self._note)
        return await asyncio.shield(self._probing)

    async def _check(self) -> bool:
        pids = self.worker_pids()
        if pids is not None and not pids:
            self._probe_failure = "no worker process"
            return False
        if await self._probe_once():
            self._ok_pids, self._slow = pids, 0
            return True
        busy = pids is not None and pids == self._ok_pids and self._probe_failure.startswith("no answer")
        if busy and self._slow < SLOW_PROBES:
            self._slow += 1
            return True
        return False

    def _note(self, fut: asyncio.Future) -> None:
        self._probing = None
        ok = not fut.cancelled() and fut.exception() is None and fut.result()
        now = time.monotonic()
        if ok:
            if self.down_since is not None and self.ever_up:
                log.warning("%s answers again after %.1f s down", self.name, now - self.down_since)
            self.down_since, self.ever_up = None, True
        elif self.down_since is None:
            self.down_since = now
            if self.ever_up:  # not while it is still loading at start-up
                log.error("%s is down (readiness probe: %s): requests that need it get 503 until it is "
                          "back%s", self.name, self._probe_failure or fut.exception() or "cancelled",
                          CONTAINER_HINT if in_container() else "")

    def worker_pids(self) -> frozenset[int] | None:
        """The living worker processes of this service under our arbiter; None if it is not served
        that way (not over a Unix socket on this host), so the process table says nothing about it."""
        if not self._url.startswith(("file:", "unix:")) or not worker_discovery():
            return None
        return frozenset(p.pid for p in sibling_workers(self.name))

    def worker_alive(self) -> bool:
        """A worker process of this service is running (True if that cannot be known)."""
        pids = self.worker_pids()
        return pids is None or bool(pids)

    def down_for(self) -> float:
        """Seconds this service has been down after having been up (0 if up or never up yet)."""
        if self.down_since is None or not self.ever_up:
            return 0.0
        return time.monotonic() - self.down_since

    # -- calls --------------------------------------------------------------------------------------
    def abandon_calls(self) -> None:
        """Fail every call now waiting on this service with DependencyDown (used at shutdown when the
        service is down: its answer will never come)."""
        if self._abandon is not None:
            self._abandon.set()
            self._abandon = None

    async def _send(self, method: str, args: tuple, deadline_s: float | None) -> Any:
        coro = getattr(self.proxy.to_async, method)(*args)
        call = asyncio.ensure_future(asyncio.wait_for(coro, deadline_s) if deadline_s else coro)
        if self._abandon is None:
            self._abandon = asyncio.Event()
        abandoned = asyncio.ensure_future(self._abandon.wait())
        try:
            done, _ = await asyncio.wait({call, abandoned}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abandoned.cancel()
            if not call.done():
                call.cancel()
        if call in done:
            return call.result()
        log.error("%s.%s abandoned: the service is down and this worker is stopping", self.name, method)
        raise DependencyDown(self.name, "the call was abandoned: the service is down")

    async def call(self, method: str, *args: Any, idempotent: bool, deadline_s: float | None = None) -> Any:
        """Call `method` on the service. `deadline_s`: our own time limit for a call that is always quick
        (then a timeout is transient); without it the service's own request timeout applies."""
        for attempt in range(1, ATTEMPTS + 1):
            if self.down_since is not None and not await self.probe():
                raise DependencyDown(self.name, "it does not answer its readiness probe")
            try:
                return await self._send(method, args, deadline_s)
            except Exception as exc:
                user_error = from_callee(exc)
                if user_error is not None:  # the request's fault, answered by a service that is up
                    raise user_error from None
                if not is_transient(exc, own_deadline=deadline_s is not None):
                    raise
                reason = _describe(exc)
                never_sent = isinstance(exc, aiohttp.ClientConnectorError)  # no connection, no request
                if not (idempotent or never_sent):
                    log.error("%s.%s failed (%s); not retried: the call is not idempotent",
                              self.name, method, reason)
                    raise DependencyDown(self.name, reason) from exc
                if attempt == ATTEMPTS:
                    log.error("%s.%s failed %d times (last: %s)", self.name, method, ATTEMPTS, reason)
                    raise DependencyDown(self.name, reason) from exc
                await asyncio.sleep(_backoff(attempt))
                if not await self.probe():
                    raise DependencyDown(self.name, reason) from exc
                log.warning("retrying %s.%s (attempt %d of %d) after %s", self.name, method, attempt + 1,
                            ATTEMPTS, reason)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Dependencies:
    """All of `Zest`'s model services: readiness and liveness over all of them."""

    def __init__(self, deps: list[Dependency]) -> None:
        self.all = deps

    async def ready(self) -> bool:
        """Every service answers its probe (in parallel; at most one probe timeout)."""
        return all(await asyncio.gather(*(d.probe() for d in self.all)))

    async def dead(self, grace_s: float) -> list[str]:
        """Services that were up and have not answered for more than `grace_s` (re-probed now)."""
        suspects = [d for d in self.all if d.down_for() > grace_s]
        results = await asyncio.gather(*(d.probe() for d in suspects))
        return [d.name for d, ok in zip(suspects, results) if not ok]

    def stopping(self) -> list[str]:
        """This worker got SIGTERM. Calls waiting on a service whose worker is gone fail now with 503
        (nothing will answer them); returns those services' names."""
        dead = []
        for d in self.all:
            d.stopping = True
            if d._remote and not d.worker_alive():
                d.abandon_calls()
                dead.append(d.name)
        return dead

    async def close(self) -> None:
        await asyncio.gather(*(d.close() for d in self.all))
