"""What the end-to-end fault tests share (test_transport, test_http_limits, test_lifecycle, test_soak,
test_store_live): servers with short time limits, a /classify request, a worker process, the server's log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from tests.images import b64, png
from tests.server import Server, running_server

SHUTDOWN_S = 20  # ZEST_SHUTDOWN_TIMEOUT_S of the test servers
LIMITS = {"ZEST_HEADER_TIMEOUT_S": "2", "ZEST_BODY_READ_TIMEOUT_S": "1", "ZEST_BODY_TIMEOUT_S": "3",
          "ZEST_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_S)}


@contextmanager
def limited_server(tiny_checkpoint: str, rec_model_dir, home: Path, **env: str) -> Iterator[Server]:
    """The real server (tests/server.py) with the LIMITS above, for the length of a `with` block."""
    with running_server(tiny_checkpoint, rec_model_dir, home, **{**LIMITS, **env}) as srv:
        yield srv


@contextmanager
def shared_server(tiny_checkpoint: str, rec_model_dir, home: Path) -> Iterator[Server]:
    """The server a test module's end-to-end tests share, in file order: a small memo of the recommender's texts
    (so that the soak crosses its bound many times) and one item, m1."""
    with limited_server(tiny_checkpoint, rec_model_dir, home, ZEST_TEXT_CACHE_SIZE="300") as srv:
        requests.post(f"{srv.url}/items", json={"items": [{"id": "m1", "text": "A space opera"}]}, timeout=60)
        yield srv


def png_b64(i: int = 0) -> str:
    """The i-th of a series of 40x40 PNGs (each a colour of its own), base64."""
    return b64(png(((i * 37) % 256, 80, 160), (40, 40)))


def classify(srv: Server, i: int = 0, labels=("cat", "dog", "car"), timeout: float = 20, **kw):
    body = {"images": [png_b64(i)], "labels": list(labels), **kw}
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


def statuses(log: str) -> list[int]:
    """The HTTP status of every request in a server log."""
    return [int(s) for s in re.findall(r"\(status=(\d{3}),", log)]
