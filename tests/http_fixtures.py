"""A plain HTTP server on 127.0.0.1 for image-URL tests: fixed bodies per path, redirects, and a record of the
Host header each request named (the hub on loopback is tests/hub.py; the zest server, tests/server.py)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class ImageHost:
    """GET `paths[path]` (200), a 302 to `redirects[path]`, or `default` for any other path; `hosts` lists the
    Host header of every request, in order."""

    paths: dict[str, bytes] = field(default_factory=dict)
    default: bytes = b""
    redirects: dict[str, str] = field(default_factory=dict)
    hosts: list[str | None] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(host: ImageHost) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.hosts.append(self.headers.get("Host"))
            if self.path in host.redirects:
                self.send_response(302)
                self.send_header("Location", host.redirects[self.path])
                self.end_headers()
                return
            body = host.paths.get(self.path, host.default)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    return Handler


@contextmanager
def image_host(paths: dict[str, bytes] | None = None, default: bytes = b"",
               redirects: dict[str, str] | None = None) -> Iterator[ImageHost]:
    """An `ImageHost` serving on a free loopback port for the length of the block."""
    host = ImageHost(dict(paths or {}), default, dict(redirects or {}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(host))  # loopback only
    server.daemon_threads = True
    host.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
