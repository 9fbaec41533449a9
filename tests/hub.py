"""A Hugging Face hub on 127.0.0.1: as much of the hub's file protocol as `huggingface_hub`'s
`hf_hub_download` uses, for repositories made in the test. Point a subprocess at it with
HF_ENDPOINT=hub.url.

What huggingface_hub needs (file_download.py, utils/_http.py):

* ``HEAD {endpoint}/{org}/{name}/resolve/{revision}/{path}``, redirects not followed, answered with
  ``X-Repo-Commit`` (the commit the revision resolves to), ``ETag`` (a git blob id) and ``Content-Length``.
  A large file (git-LFS on the real hub) answers 302 instead, with ``Location`` on another origin (the
  hub's CDN; here a second port), ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``: the client then
  takes the metadata from the 302 itself and GETs the Location.
* ``GET`` of the same URL (or the Location): the bytes.
* Errors are 404s with ``X-Error-Code``: ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound`` (the
  last with ``X-Repo-Commit``, so that the client caches the file's absence).
* Revisions: ``main`` and the full commit id.

Every request is recorded in `requests` (method, path), so a test can tell what was asked.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class _File:
    path: Path
    size: int
    git_oid: str  # sha1 of the git blob: the ETag of a regular file
    sha256: str  # the ETag of an LFS file

    @property
    def lfs(self) -> bool:
        return self.path.suffix in LFS_SUFFIXES


@dataclass
class _Repo:
    commit: str
    files: dict[str, _File] = field(default_factory=dict)


def _hash_file(path: Path) -> tuple[str, str]:
    size = path.stat().st_size
    git, sha = hashlib.sha1(f"blob {size}\0".encode()), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            git.update(chunk)
            sha.update(chunk)
    return git.hexdigest(), sha.hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: "Hub"
    cdn: bool = False

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _reply(self, status: int, headers: dict[str, str], file: _File | None = None, body: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(file.size if file is not None else 0))
        self.end_headers()
        if body and file is not None:
            with open(file.path, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    def _error(self, code: str, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._reply(404, headers)

    def _serve(self, body: bool) -> None:
        self.hub.requests.append((self.command, self.path, "cdn" if self.cdn else "hub"))
        if self.cdn:  # /blobs/{sha256}
            file = self.hub._blobs.get(self.path.rsplit("/", 1)[-1])
            if file is None or not self.path.startswith("/blobs/"):
                return self._reply(404, {})
            return self._reply(200, {"ETag": f'"{file.sha256}"', "Content-Type": "application/octet-stream"},
                               file, body)
        parts = self.path.split("?", 1)[0].lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error("NotFound", "zest's test hub serves only /{org}/{name}/resolve/{revision}/{path}")
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote(parts[4])
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error("RepoNotFound", "Repository not found")
        if revision not in ("main", repo.commit):
            return self._error("RevisionNotFound", "Invalid rev id: " + revision)
        file = repo.files.get(filename)
        if file is None:
            return self._error("EntryNotFound", f"{filename} does not exist on {revision}", repo.commit)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{file.git_oid}"',
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if file.lfs:
            headers.update({"Location": f"{self.hub.cdn_url}/blobs/{file.sha256}",
                            "X-Linked-Etag": f'"{file.sha256}"', "X-Linked-Size": str(file.size)})
            return self._reply(302, {**headers, "Content-Length": "0"})
        self._reply(200, headers, file, body)


class Hub:
    """`add_repo` then `start`; `stop` makes the port refuse connections (a hub that is down)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._blobs: dict[str, _File] = {}
        self._servers: list[http.server.ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes | str | Path]) -> str:
        """A repository at one commit; values are contents or paths of files to serve. Returns the commit."""
        directory = self.workdir / repo_id.replace("/", "--")
        directory.mkdir(parents=True, exist_ok=True)
        entries = {}
        for name, content in files.items():
            if isinstance(content, (bytes, str)):
                path = directory / name
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            else:
                path = Path(content)
            git_oid, sha256 = _hash_file(path)
            entries[name] = _File(path, path.stat().st_size, git_oid, sha256)
            self._blobs[sha256] = entries[name]
        commit = hashlib.sha1(repr(sorted((n, f.git_oid) for n, f in entries.items())).encode()).hexdigest()
        self.repos[repo_id] = _Repo(commit, entries)
        return commit

    def start(self) -> "Hub":
        for cdn in (False, True):
            handler = type("Handler", (_Handler,), {"hub": self, "cdn": cdn})
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
            self._servers.append(server)
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def downloads(self, filename: str) -> int:
        """How many times the bytes of `filename` went out (GETs of it, or of its CDN blob)."""
        shas = {f.sha256 for r in self.repos.values() for n, f in r.files.items() if n == filename}
        return sum(1 for method, path, _ in self.requests if method == "GET" and (
            path.endswith("/" + quote(filename)) or path.rsplit("/", 1)[-1] in shas))


def hf_env(hub_url: str, hf_home: Path) -> dict[str, str]:
    """Environment for a subprocess that uses `hub_url` as its hub and `hf_home` as its cache, online."""
    return {"HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def wait_closed(url: str, timeout: float = 5) -> None:
    """Until nothing accepts connections at `url` (a stopped hub)."""
    import socket
    from urllib.parse import urlparse

    host, port = urlparse(url).hostname, urlparse(url).port
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} still accepts connections")


PHASES = ("download", "hub stopped")


def from_hub_then_from_cache(hub: Hub, use: Callable[[str], None]) -> None:
    """`use("download")` with `hub` up, then `use("hub stopped")` once its port refuses connections: what the
    second call loads can only come from the cache the first one filled."""
    for phase in PHASES:
        if phase == "hub stopped":
            hub.stop()
            wait_closed(hub.url)
        use(phase)


def serve_from_hub_then_from_cache(hub: Hub, env: dict[str, str], log_dir: Path, check: Callable[..., None],
                                   timeout: float = 180) -> None:
    """The real server with `env` (pointed at `hub`) once per phase of `from_hub_then_from_cache`:
    `check(srv, phase)` while it serves; stopped after each phase, however the check ends."""
    from tests.server import Server, serving

    def use(phase: str) -> None:
        with serving(Server(env, Path(log_dir) / f"server-{phase.replace(' ', '-')}.log"), timeout) as srv:
            check(srv, phase)

    from_hub_then_from_cache(hub, use)
