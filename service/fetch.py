"""Guarded image-URL fetching: off unless the operator allow-lists hosts (`ZEST_URL_ALLOWLIST`).

An allowed host is resolved once, and fetched only if *every* address it resolves to is public: not loopback,
link-local, private, shared (100.64/10), multicast, reserved, unspecified or a cloud metadata address, an
IPv4-mapped, 6to4, Teredo or NAT64 form of one included (`address_problem`). Hosts named in
`ZEST_URL_ALLOW_PRIVATE` (on-premises image stores) may resolve to loopback and private addresses, never to
a metadata, unspecified or multicast one. The connection then goes to the checked addresses only: an httpcore
network backend connects to them instead of looking the name up again (so DNS rebinding between the check
and the connect cannot move it), while the Host header and TLS's SNI and certificate check keep the name.
No redirects, no proxies from the environment, a bounded size.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from ..models.errors import InvalidInput
from ..models.limits import check_at_most

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses, as getaddrinfo gives them

# AWS/GCP/Azure/OpenStack (169.254.169.254), AWS over IPv6 (fd00:ec2::254), Alibaba (100.100.100.200).
METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
FETCH_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol)


def host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    """Exact host match, or a subdomain of an entry written with a leading dot (".example.com")."""
    host = host.lower().rstrip(".")
    return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in allowlist)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver, once), in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"image URL host {host!r} cannot be resolved ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_problem(addr: IPAddress, private_ok: bool = False) -> str | None:
    """Why an image may not be fetched from `addr` ("a loopback address", ...), or None if it may."""
    inner = _embedded_ipv4(addr)
    if inner is not None:
        problem = address_problem(inner, private_ok)
        if problem is not None:
            return f"{problem} in IPv6 form"
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return None  # ::ffff:a.b.c.d is a.b.c.d on the wire
    if addr in METADATA:
        return "the cloud metadata address"
    if addr.is_unspecified:
        return "an unspecified address"
    if addr.is_multicast:
        return "a multicast address"
    if private_ok:
        return None
    for problem, hit in (("a loopback address", addr.is_loopback), ("a link-local address", addr.is_link_local),
                         ("a reserved address", addr.is_reserved), ("a private address", addr.is_private)):
        if hit:
            return problem
    return None if addr.is_global else "not a public address"


def vetted_addresses(host: str, port: int, private_ok: bool, resolver: Resolver) -> list[str]:
    """The addresses to connect to for `host`: all it resolves to, once, each checked; InvalidInput (400)
    naming the first address that may not be fetched from and why."""
    try:
        addresses = [str(ipaddress.ip_address(host))]  # a literal: nothing to look up
    except ValueError:
        addresses = resolver(host, port)
    if not addresses:
        raise InvalidInput(f"image URL host {host!r} resolves to no address")
    for raw in addresses:
        try:
            addr = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            raise InvalidInput(f"image URL host {host!r} resolves to {raw!r}, not an IP address") from None
        problem = address_problem(addr, private_ok)
        if problem is not None:
            hint = ("" if private_ok or problem in ("the cloud metadata address", "an unspecified address",
                                                     "a multicast address")
                    else "; an on-premises image store may be admitted by naming it in ZEST_URL_ALLOW_PRIVATE")
            raise InvalidInput(f"image URL host {host!r} resolves to {addr}, {problem}: not fetched{hint}")
    return addresses


class VettedBackend(httpcore.NetworkBackend):
    """Connects to the checked addresses of one host, in order, and to nothing else."""

    def __init__(self, host: str, addresses: Iterable[str]) -> None:
        self.host = host
        self.addresses = list(addresses)
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        if host.strip("[]").lower().rstrip(".") != self.host:
            raise httpcore.ConnectError(f"refusing to connect to {host!r}: only {self.host!r} was checked")
        failure: Exception = httpcore.ConnectError("no address")
        for address in self.addresses:
            try:
                return self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("image URLs are fetched over TCP only")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def fetch_image_bytes(url: str, *, allowlist: tuple[str, ...], max_bytes: int, timeout_s: float,
                      allow_private: tuple[str, ...] = (), resolver: Resolver = resolve) -> bytes:
    """GET `url` if its host is allow-listed and resolves to addresses it may be fetched from (module doc)."""
    if not allowlist:
        raise InvalidInput("image URLs are not fetched by this server (ZEST_URL_ALLOWLIST is empty); "
                           "send the image bytes instead")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"image URL {url!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise InvalidInput("image URLs with credentials are refused")
    host = parts.hostname.lower().rstrip(".")
    if not host.isascii():
        raise InvalidInput(f"image URL host {parts.hostname!r}: write an internationalised name in its "
                           "xn-- (punycode) form")
    if not host_allowed(host, allowlist):
        raise InvalidInput(f"image URL host {parts.hostname!r} is not in ZEST_URL_ALLOWLIST")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput(f"image URL {url!r} has an invalid port") from None
    addresses = vetted_addresses(host, port, host_allowed(host, allow_private), resolver)
    timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    try:
        with (httpcore.ConnectionPool(network_backend=VettedBackend(host, addresses), retries=0,
                                      max_connections=1) as pool,
              pool.stream("GET", url, headers=[(b"User-Agent", b"zest"), (b"Accept", b"image/*")],
                          extensions={"timeout": timeouts}) as resp):
            if resp.status != 200:
                raise InvalidInput(f"image URL {url!r} answered HTTP {resp.status}")
            chunks, size = [], 0
            for chunk in resp.iter_stream():
                size += len(chunk)
                check_at_most(size, max_bytes, f"image at {url!r}", "bytes")
                chunks.append(chunk)
    except FETCH_ERRORS as exc:
        raise InvalidInput(f"could not fetch image URL {url!r}: {type(exc).__name__}") from exc
    return b"".join(chunks)
