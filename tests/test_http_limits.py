"""service/http_limits.py: the body timeouts in-process, then slow clients against the real server on loopback
(a stalled or trickling body gets a 408, half-sent heads are closed by the header timeout) while everyone
else is served.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from tests.faults import classify, shared_server
from tests.server import Server
from zest.service.errors import RequestTimeout
from zest.service.http_limits import BodyTimeoutMiddleware


def _run(coro):
    return asyncio.run(coro)


def test_body_timeout_middleware():
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    async def scenario(messages, read_s, total_s):
        async def receive():
            delay, message = messages.pop(0)
            await asyncio.sleep(delay)
            return message

        await BodyTimeoutMiddleware(app, read_s, total_s)({"type": "http"}, receive, None)

    chunk = {"type": "http.request", "body": b"x", "more_body": True}
    last = {"type": "http.request", "body": b"x", "more_body": False}
    _run(scenario([(0.01, chunk), (0.01, last)], 0.2, 1))  # prompt: fine
    with pytest.raises(RequestTimeout, match="no data for 0.05 s"):
        _run(scenario([(0.01, chunk), (0.5, last)], 0.05, 1))
    with pytest.raises(RequestTimeout, match="not complete after 0.1 s"):
        _run(scenario([(0.04, chunk)] * 5 + [(0.01, last)], 0.05, 0.1))



# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory):
    with shared_server(tiny_checkpoint, rec_model_dir, tmp_path_factory.mktemp("http-limits")) as srv:
        yield srv


# -- 2. slow clients --------------------------------------------------------------------------------------
def _raw(srv: Server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(data)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_body_gets_408_while_others_are_served(server):
    head = (b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: 5000\r\n\r\n")
    stalled = _raw(server, head + b'{"images": [')  # then nothing: the read timeout (1 s) cuts it
    trickler = _raw(server, head)  # a byte every 0.5 s: never idle 1 s, cut by the 3 s body limit
    t0 = time.monotonic()
    served = []
    for i in range(8):
        if time.monotonic() - t0 < 4:
            try:
                trickler.sendall(b" ")
            except OSError:
                pass
        served.append(classify(server, i).status_code)
        time.sleep(0.5)
    for sock, limit in ((stalled, "no data for 1 s"), (trickler, "not complete after 3 s")):
        reply = _read_all(sock)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert limit in body["error"], body
    assert served == [200] * 8  # the others kept being served meanwhile
    assert time.monotonic() - t0 < 15


def test_half_sent_heads_are_closed_by_the_header_timeout(server):
    socks = [_raw(server, b"GET /templates HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") for _ in range(50)]
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # sends nothing at all
    t0 = time.monotonic()
    assert classify(server).status_code == 200  # served while 51 connections dawdle
    replies = [_read_all(s) for s in socks + [idle]]
    waited = time.monotonic() - t0
    for s in socks + [idle]:
        s.close()
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in replies[:-1]), {r[:40] for r in replies}
    assert replies[-1] == b""  # a connection that never sent a byte is just closed
    assert waited < 2 + 3, waited  # ZEST_HEADER_TIMEOUT_S=2, plus slack for a loaded machine
    assert classify(server).status_code == 200
