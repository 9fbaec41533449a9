"""Optional API keys: `ZEST_API_KEYS` set -> every request needs `Authorization: Bearer <key>`, and the key's
scope, collections and rate limit decide what it may do (README: "API keys and scopes").

Keys are read at start-up by service/keyfile.py; each route's scope is `ROUTE_SCOPES` (service/scopes.py), rate
limits service/ratelimit.py. The presented key's SHA-256 is compared with every configured key's by
`hmac.compare_digest`, all of them every time (no timing signal). Keys are never logged: access lines name a key
by its name; a 401 carries `WWW-Authenticate: Bearer realm="zest"` (RFC 6750).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .keyfile import ApiKey, Scope, is_key_file, read_keys
from .ratelimit import TokenBucket, retry_after
from .scopes import KEY_IN_SCOPE, Access, RouteScopes, refusal

__all__ = ["ApiKeyMiddleware", "ApiKeys", "is_key_file", "is_open", "load_api_keys"]

# BentoML's own endpoints (not routes of the FastAPI app, so not in ROUTE_SCOPES): never behind a key.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/"})
OPEN_PREFIXES = ("/static_content/",)  # BentoML's Swagger UI files
REALM = 'Bearer realm="zest"'
access_log = logging.getLogger("zest.access")


def load_api_keys(raw: str) -> ApiKeys:
    """The keys `ZEST_API_KEYS` names (formats: service/keyfile.py). Raises ValueError naming the file, never a key."""
    if not raw.strip():
        return ApiKeys([], "ZEST_API_KEYS")
    keys, source = read_keys(raw)
    return ApiKeys(keys, source)


class ApiKeys:
    """The configured keys (as SHA-256 digests, with their names and scopes). Its repr shows how many, never which."""

    def __init__(self, keys: list[ApiKey], source: str) -> None:
        self.keys = list(keys)
        self.source = source

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} from {self.source})" if self else "ApiKeys(off)"

    def find(self, presented: str) -> ApiKey | None:
        """The key `presented` is, or None. Constant-time in the position of the match: every key is compared."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def accepts(self, presented: str) -> bool:
        return self.find(presented) is not None

    def describe(self) -> str:
        """The start-up log line (names and scopes, no key in it)."""
        if not self:
            return ("API keys: off (ZEST_API_KEYS is not set): every endpoint answers anyone who can reach the "
                    "port; set ZEST_API_KEYS to require Authorization: Bearer <key>")
        scopes = ", ".join(f"{s.name} {n}" for s in Scope if (n := sum(k.scope is s for k in self.keys)))
        limited = sum(k.collections is not None for k in self.keys)
        rated = sum(k.rate is not None for k in self.keys)
        return (f"API keys: on, {len(self)} key(s) from {self.source} ({scopes}; {limited} limited to collections, "
                f"{rated} rate-limited): every endpoint but /livez, /readyz, /healthz, /metrics and the API docs "
                "needs Authorization: Bearer <key>")


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


async def _refuse(send: Any, status: int, message: str, headers: Mapping[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *((k.encode(), v.encode()) for k, v in headers.items())]})
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """ASGI middleware on the public service (outside every route, BentoML's own included): authenticate, rate
    limit, check the route's scope (`app_routes()`, `table`: the app's routes and ROUTE_SCOPES), log writes."""

    def __init__(self, app: Any, keys: ApiKeys, app_routes: Callable[[], list], table: Mapping[str, Access],
                 buckets: dict[str, TokenBucket] | None = None) -> None:
        self.app = app
        self.keys = keys
        self.routes = RouteScopes(app_routes, table)
        self.buckets = buckets if buckets is not None else {
            k.name: TokenBucket(k.rate, k.burst or 1) for k in keys.keys if k.rate is not None}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.keys or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        found = self.routes.find(scope)
        if found is not None and found[1].scope is None:  # a public route
            return await self.app(scope, receive, send)
        token = _bearer(scope["headers"])
        key = self.keys.find(token) if token is not None else None
        if key is None:
            if token is None:
                message, challenge = "an API key is required: send the header Authorization: Bearer <key>", REALM
            else:
                message, challenge = "the API key is not valid", f'{REALM}, error="invalid_token"'
            return await _refuse(send, 401, message, {"www-authenticate": challenge})
        what = found[0] if found else f"{scope.get('method', '')} {scope['path']}"
        bucket = self.buckets.get(key.name)
        if bucket is not None and (wait := bucket.take()):
            self._log(scope, key, 429)
            return await _refuse(send, 429, f"the API key {key.name!r} is over its rate limit ({bucket.rate:g} "
                                 f"requests/s, burst {bucket.burst}): retry after {retry_after(wait)} s",
                                 {"retry-after": str(retry_after(wait))})
        if found is not None:
            why = refusal(key, what, found[1], found[2])
            if why is not None:
                self._log(scope, key, 403)
                return await _refuse(send, 403, why, {})
        scope[KEY_IN_SCOPE] = key
        if found is None or found[1].scope is None or found[1].scope < Scope.write:
            return await self.app(scope, receive, send)
        status = 500  # if the app sends nothing

        async def logged_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            self._log(scope, key, status)

    @staticmethod
    def _log(scope: dict, key: ApiKey, status: int) -> None:
        client = (scope.get("client") or ("-",))[0]
        path = scope["path"] if scope["path"].isprintable() else scope["path"].encode("unicode_escape").decode()
        access_log.info("%s %s -> %d, key %r, from %s", scope.get("method", ""), path, status, key.name,
                        client)
