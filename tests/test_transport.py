"""Issue #16: the retry policy in-process, then end to end on the real server (`bentoml serve`) on
loopback: no request hangs or fails without a fault; readiness tells the truth.

One server serves the end-to-end tests in file order (each leaves it serving). Every loop here is
bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import aiohttp
import psutil
import pytest
import requests
from PIL import Image

from zest.service import transport
from zest.service.errors import DependencyDown
from tests.server import Server

# -- the retry policy, in-process -------------------------------------------------------------------------
class FakeService:
    """Stands in for a RemoteProxy: `to_async.<method>` fails with the queued errors, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0
        self.to_async = self

    async def method(self, *args):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"args": args}


def _dep(service: FakeService, probe_ok: bool = True) -> transport.Dependency:
    dep = transport.Dependency("fake", service, probe_timeout_s=0.1)
    probes = []

    async def probe() -> bool:
        probes.append(1)
        return probe_ok

    dep.probe, dep.probes = probe, probes
    return dep


def _run(coro):
    return asyncio.run(coro)


DROPPED = aiohttp.ServerDisconnectedError()
CLOSED = RuntimeError("Connection closed.")
REFUSED = aiohttp.ClientConnectorError(SimpleNamespace(ssl=True, host="127.0.0.1", port=9),  # never sent
                                       OSError(111, "Connection refused"))


@pytest.mark.parametrize("exc, transient", [
    (DROPPED, True), (CLOSED, True), (REFUSED, True), (aiohttp.ClientOSError(), True),
    (RuntimeError("Session is closed"), True), (RuntimeError("boom"), False), (ValueError("bad"), False),
    (asyncio.TimeoutError(), False), (aiohttp.ServerTimeoutError(), False),
])
def test_transient_errors(exc, transient):
    assert transport.is_transient(exc) is transient
    if isinstance(exc, asyncio.TimeoutError):
        assert transport.is_transient(exc, own_deadline=True)  # only a short deadline of our own


@pytest.mark.parametrize("exc", [DROPPED, CLOSED])
def test_idempotent_call_is_retried_after_a_probe(exc):
    service = FakeService(exc)
    dep = _dep(service)
    assert _run(dep.call("method", 1, idempotent=True)) == {"args": (1,)}
    assert service.calls == 2 and len(dep.probes) == 1


def test_retries_are_bounded():
    service = FakeService(DROPPED, DROPPED, DROPPED, DROPPED)
    with pytest.raises(DependencyDown):
        _run(_dep(service).call("method", idempotent=True))
    assert service.calls == transport.ATTEMPTS


def test_a_call_that_may_have_been_sent_is_not_repeated_unless_idempotent():
    service = FakeService(DROPPED)
    with pytest.raises(DependencyDown):
        _run(_dep(service).call("method", idempotent=False))
    assert service.calls == 1
    service = FakeService(REFUSED)  # the connection never opened: nothing was sent, any call may go again
    assert _run(_dep(service).call("method", idempotent=False)) == {"args": ()}


def test_no_retry_into_a_service_that_does_not_answer_its_probe():
    service = FakeService(DROPPED)
    dep = _dep(service, probe_ok=False)
    with pytest.raises(DependencyDown):
        _run(dep.call("method", idempotent=True))
    assert service.calls == 1


def test_other_errors_pass_through_unretried():
    service = FakeService(ValueError("bad input"))
    with pytest.raises(ValueError):
        _run(_dep(service).call("method", idempotent=True))
    assert service.calls == 1


def test_backoff_has_jitter_and_a_cap():
    waits = {transport._backoff(2) for _ in range(50)}
    assert len(waits) > 40 and max(waits) <= min(transport.BACKOFF_CAP_S, transport.BACKOFF_BASE_S * 4)


# -- end to end ------------------------------------------------------------------------------------------
LIMITS: dict[str, str] = {}


def start(tiny_checkpoint, rec_model_dir, home, **env) -> Server:
    srv = Server({"ZEST_MODEL": f"local-dir:{tiny_checkpoint}", "ZEST_REC_MODEL": str(rec_model_dir),
                  "ZEST_DATA_DIR": str(home / "data"), "BENTOML_HOME": str(home), **LIMITS, **env},
                 home / "server.log")
    try:
        srv.wait_ready()
    except Exception:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory):
    srv = start(tiny_checkpoint, rec_model_dir, tmp_path_factory.mktemp("transport"))
    requests.post(f"{srv.url}/items", json={"items": [{"id": "m1", "text": "A space opera"}]}, timeout=60)
    yield srv
    srv.stop()


def _png(i: int = 0) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), ((i * 37) % 256, 80, 160)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def classify(srv: Server, i: int = 0, labels=("cat", "dog", "car"), timeout: float = 20, **kw):
    body = {"images": [_png(i)], "labels": list(labels), **kw}
    return requests.post(f"{srv.url}/classify", json=body, timeout=timeout)


def worker(srv: Server, service: str) -> psutil.Process:
    """The (single) BentoML worker process of `service` under the server's arbiter."""
    for child in psutil.Process(srv.proc.pid).children():
        cmd = child.cmdline()
        if "--service-name" in cmd and cmd[cmd.index("--service-name") + 1] == service:
            return child
    raise LookupError(f"no worker for {service}")


def server_log(srv: Server) -> str:
    srv._log.flush()
    return srv.log_path.read_text(errors="replace")


def _statuses(log: str) -> list[int]:
    return [int(s) for s in re.findall(r"\(status=(\d{3}),", log)]


# -- 1. no fault, no failure ----------------------------------------------------------------------------
CLIENTS, PER_CLIENT = 8, 75  # 600 requests: ~450 encoder calls, ~150 recommender calls


def test_no_fault_load_crosses_the_session_refresh_without_a_failure(server):
    """Before the fix, BentoML closed its client session every 100 calls under running calls: hung
    requests, 'retrying ... ServerDisconnectedError' lines, the odd 500 (issue #16)."""
    log_start = len(server_log(server))
    stop = threading.Event()
    probes: list[tuple[int, float]] = []

    def poll_readyz() -> None:  # readiness must not flap under load, and answers fast
        while not stop.is_set() and len(probes) < 600:
            t = time.monotonic()
            try:
                code = requests.get(f"{server.url}/readyz", timeout=5).status_code
            except requests.RequestException:
                code = 0
            probes.append((code, time.monotonic() - t))
            time.sleep(0.2)

    def client(c: int) -> list[tuple[object, float]]:
        out = []
        with requests.Session() as s:
            for n in range(PER_CLIENT):
                t = time.monotonic()
                try:
                    if n % 4 == 3:
                        r = s.get(f"{server.url}/items/m1", timeout=20)
                    else:
                        r = s.post(f"{server.url}/classify", timeout=20,
                                   json={"images": [_png(c * 100 + n)], "labels": ["cat", "dog", "car"]})
                    out.append((r.status_code, time.monotonic() - t))
                except requests.RequestException as exc:  # a hung request ends here, after 20 s
                    out.append((type(exc).__name__, time.monotonic() - t))
        return out

    poller = threading.Thread(target=poll_readyz)
    poller.start()
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(client, range(CLIENTS)) for r in rs]
    finally:
        stop.set()
        poller.join(10)
    elapsed = time.monotonic() - t0
    log = server_log(server)[log_start:]
    outcomes = {o: sum(1 for r in results if r[0] == o) for o in {r[0] for r in results}}
    print(f"\n{len(results)} requests in {elapsed:.1f} s: {outcomes}; max latency "
          f"{max(r[1] for r in results):.2f} s; {len(probes)} /readyz, slowest {max(p[1] for p in probes):.2f} s; "
          f"'retrying' lines: {log.count('retrying')}")
    assert len(results) == CLIENTS * PER_CLIENT
    assert outcomes == {200: CLIENTS * PER_CLIENT}, outcomes
    assert max(r[1] for r in results) < 10
    assert "retrying" not in log and "[ERROR]" not in log, log[-3000:]
    assert not [s for s in _statuses(log) if s >= 500]
    assert {p[0] for p in probes} == {200} and max(p[1] for p in probes) < 1.0, probes


# -- 2. a model worker dies: readiness says so within a second, and recovers ---------------------------
def test_readiness_flips_when_the_encoder_dies_and_back_when_it_returns(server):
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    victim = worker(server, "zest-clip-encoder")
    victim.kill()
    t_kill = time.monotonic()
    seen: list[tuple[float, int, float]] = []  # (since kill, status, answer time)
    first_503 = back = None
    outage_request = None
    while time.monotonic() - t_kill < 120:
        t = time.monotonic()
        try:
            code = requests.get(f"{server.url}/readyz", timeout=5).status_code
        except requests.RequestException:
            code = 0
        seen.append((t - t_kill, code, time.monotonic() - t))
        if code == 503 and first_503 is None:
            first_503 = t - t_kill
            t_req = time.monotonic()
            r = classify(server, timeout=20)
            outage_request = (r.status_code, r.json(), time.monotonic() - t_req)
        if code == 200 and first_503 is not None:
            back = t - t_kill
            break
        time.sleep(0.1)
    print(f"\n/readyz 503 {first_503:.2f} s after the kill, 200 again after {back:.1f} s; slowest answer "
          f"{max(s[2] for s in seen):.2f} s; a /classify meanwhile: {outage_request}")
    assert first_503 is not None and first_503 < 1.0, seen[:20]
    assert max(s[2] for s in seen) < 1.0, [s for s in seen if s[2] >= 1.0]
    assert {s[1] for s in seen} <= {200, 503}, seen
    assert outage_request[0] == 503 and "zest-clip-encoder" in outage_request[1]["error"]
    assert outage_request[2] < 2.0  # fails fast instead of waiting in the dead socket's backlog
    assert back is not None, seen[-5:]
    assert worker(server, "zest-clip-encoder").pid != victim.pid
    assert classify(server).status_code == 200
