"""The playground at GET /ui: hand-written HTML/JS/CSS from service/ui/ (package data), no build step and no
third-party file, so it works offline and ships in the wheel and the bento as plain files. Open without an API
key (service/auth.py): the page asks for one and sends it with every API call."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from ..models.errors import NotFound

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
# Only this server's own files and the API: no request can leave for another host.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
                                      "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
OPEN: dict[str, object] = {"security": []}  # listed in /docs.json as needing no key


UI_DIR = Path(__file__).with_name("ui")


def read(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def install(app: FastAPI) -> None:
    @app.get("/ui", response_class=HTMLResponse, tags=["Playground"], openapi_extra=OPEN)
    def playground() -> Response:
        """The playground: classify, search, recommend and see the server's status in a browser."""
        return Response(read("index.html"), media_type=FILES["index.html"], headers=HEADERS)

    @app.get("/ui/{file}", tags=["Playground"], openapi_extra=OPEN,
             responses={200: {"description": "the file", "content": {t.split(";")[0]: {} for t in FILES.values()}}})
    def playground_file(file: str) -> Response:
        """The playground's script and style sheet."""
        if file not in FILES:
            raise NotFound(f"no playground file {file!r}; there are {', '.join(sorted(FILES))}")
        return Response(read(file), media_type=FILES[file], headers=HEADERS)
