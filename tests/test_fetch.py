import http.server
import io
import threading

import pytest
from PIL import Image

from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.service.fetch import fetch_image_bytes, host_allowed


@pytest.fixture(scope="module")
def image_host():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, "PNG")
    png = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.2/secret")
                self.end_headers()
                return
            body = png if self.path == "/img.png" else b"x" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", png
    server.shutdown()


def fetch(url, allowlist=("127.0.0.1",), max_bytes=10_000):
    return fetch_image_bytes(url, allowlist=allowlist, max_bytes=max_bytes, timeout_s=5)


def test_allowlisted_host_is_fetched(image_host):
    base, png = image_host
    assert fetch(f"{base}/img.png") == png


def test_nothing_is_fetched_without_allowlist(image_host):
    base, _ = image_host
    with pytest.raises(InvalidInput, match="not fetched"):
        fetch(f"{base}/img.png", allowlist=())
    with pytest.raises(InvalidInput, match="not in ZEST_URL_ALLOWLIST"):
        fetch(f"{base}/img.png", allowlist=("images.example.com",))


def test_redirects_schemes_credentials_and_size(image_host):
    base, _ = image_host
    with pytest.raises(InvalidInput, match="HTTP 302"):
        fetch(f"{base}/redirect")
    with pytest.raises(InvalidInput, match="http"):
        fetch("file:///etc/passwd")
    with pytest.raises(InvalidInput, match="credentials"):
        fetch(base.replace("http://", "http://user:pw@") + "/img.png")
    with pytest.raises(PayloadTooLarge):
        fetch(f"{base}/big", max_bytes=1000)


def test_host_matching():
    assert host_allowed("img.example.com", (".example.com",))
    assert not host_allowed("evilexample.com", (".example.com",))
    assert not host_allowed("example.com.evil.net", ("example.com",))
    assert host_allowed("Example.COM.", ("example.com",))
