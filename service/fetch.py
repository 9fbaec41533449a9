"""Guarded image-URL fetching: off unless the operator allow-lists hosts."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ..models.errors import InvalidInput
from ..models.limits import check_at_most


def host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    """Exact host match, or a subdomain of an entry written with a leading dot (".example.com")."""
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowlist)


def fetch_image_bytes(url: str, *, allowlist: tuple[str, ...], max_bytes: int, timeout_s: float) -> bytes:
    """GET `url` if its host is allow-listed; no redirects, no proxies from the environment, bounded size."""
    if not allowlist:
        raise InvalidInput("image URLs are not fetched by this server (ZEST_URL_ALLOWLIST is empty); "
                           "send the image bytes instead")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"image URL {url!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise InvalidInput("image URLs with credentials are refused")
    if not host_allowed(parts.hostname, allowlist):
        raise InvalidInput(f"image URL host {parts.hostname!r} is not in ZEST_URL_ALLOWLIST")
    try:
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout_s) as client, \
                client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise InvalidInput(f"image URL {url!r} answered HTTP {resp.status_code}")
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                check_at_most(size, max_bytes, f"image at {url!r}", "bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise InvalidInput(f"could not fetch image URL {url!r}: {type(exc).__name__}") from exc
    return b"".join(chunks)
