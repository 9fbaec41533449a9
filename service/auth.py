"""Optional API keys: `ZEST_API_KEYS` set -> every request needs `Authorization: Bearer <key>`.

- **Where the keys come from.** `ZEST_API_KEYS` is either a comma-separated list of keys, or the path of a
  file (a value starting with `/`, `./`, `../` or `~`) holding one key per line (blank lines and lines
  starting with `#` are skipped; commas separate keys too). The file is read at start-up: restart to
  apply a change. A file that is missing, unreadable or holds no key stops the start with an error that
  names the file, never a key.
- **What is open.** The probes (`/livez`, `/readyz`, `/healthz`) and `/metrics`, so an orchestrator and
  Prometheus need no secret; and the API's documentation (`/`, its static files, `/docs.json`), which a
  browser loads without a header: the spec declares the bearer scheme and Swagger's "Authorize" button
  sends the key with "Try it out"; and the playground page (`/ui`, `/ui/*`), which asks for a key itself. Everything else, unknown paths included (a 401, not a 404, so routes are
  not probed without a key), needs a key.
- **How it is checked.** The presented key is compared with every configured key by `hmac.compare_digest`
  on SHA-256 digests, all of them every time, so neither the position of a match nor a key's length shows
  in the response time.
- **Never logged.** Keys are not in `Settings`' repr, in an error message or in a log line; the start-up
  line says only whether keys are on, how many and where from. A 401 is `{"error": ...}` with
  `WWW-Authenticate: Bearer realm="zest"` (RFC 6750; `error="invalid_token"` for a wrong key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/", "/docs.json", "/ui"})
OPEN_PREFIXES = ("/static_content/", "/ui/")  # BentoML's Swagger UI files; the playground's (service/playground.py)
REALM = 'Bearer realm="zest"'


def is_key_file(raw: str) -> bool:
    return raw.startswith(("/", "./", "../", "~"))


def load_api_keys(raw: str) -> ApiKeys:
    """The keys `ZEST_API_KEYS` names (see the module doc). Raises ValueError naming the file, never a key."""
    raw = raw.strip()
    source = "ZEST_API_KEYS"
    if is_key_file(raw):
        path = Path(raw).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"ZEST_API_KEYS names the key file {str(path)!r}, which cannot be read "
                             f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or 'not text'})") from None
        lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
        keys = [k.strip() for line in lines for k in line.split(",") if k.strip()]
        if not keys:
            raise ValueError(f"ZEST_API_KEYS names the key file {str(path)!r}, which holds no key: put one key "
                             "per line, or unset ZEST_API_KEYS to serve without keys")
        source = f"the file {path}"
    else:
        keys = [k.strip() for k in raw.split(",") if k.strip()]
    return ApiKeys(keys, source)


class ApiKeys:
    """The configured keys, kept as SHA-256 digests. Its repr shows how many, never which."""

    def __init__(self, keys: list[str], source: str) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in dict.fromkeys(keys)]
        self.source = source

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} from {self.source})" if self else "ApiKeys(off)"

    def accepts(self, presented: str) -> bool:
        """Constant-time in the position of the matching key: every key is compared, every time."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found

    def describe(self) -> str:
        """The start-up log line (no key in it)."""
        if not self:
            return ("API keys: off (ZEST_API_KEYS is not set): every endpoint answers anyone who can reach the "
                    "port; set ZEST_API_KEYS to require Authorization: Bearer <key>")
        return (f"API keys: on, {len(self)} key(s) from {self.source}: every endpoint but /livez, /readyz, "
                "/healthz, /metrics and the API docs needs Authorization: Bearer <key>")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the request's `Authorization: Bearer <token>` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class ApiKeyMiddleware:
    """ASGI middleware on the public service (outside every route, BentoML's own included)."""

    def __init__(self, app, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.keys or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        token = _bearer(scope["headers"])
        if token is not None and self.keys.accepts(token):
            return await self.app(scope, receive, send)
        if token is None:
            message, challenge = "an API key is required: send the header Authorization: Bearer <key>", REALM
        else:
            message, challenge = "the API key is not valid", f'{REALM}, error="invalid_token"'
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": body})
