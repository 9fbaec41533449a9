"""Image-URL fetching (service/fetch.py): the host allow-list, then every resolved address checked, and the
connection made to the checked address (a resolver stub stands in for DNS; the image server is on 127.0.0.1)."""

import ipaddress
import socket
import threading

import pytest

from tests import http_fixtures, images
from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.service.fetch import address_problem, fetch_image_bytes, host_allowed


@pytest.fixture(scope="module")
def image_host():
    png = images.png("green", (8, 8))
    with http_fixtures.image_host({"/img.png": png}, default=b"x" * 5000,
                                  redirects={"/redirect": "http://127.0.0.2/secret"}) as host:
        yield host.url, png, host


def fetch(url, allowlist=("127.0.0.1",), max_bytes=10_000, allow_private=("127.0.0.1",), resolver=None):
    kw = {"resolver": resolver} if resolver is not None else {}
    return fetch_image_bytes(url, allowlist=allowlist, max_bytes=max_bytes, timeout_s=5,
                             allow_private=allow_private, **kw)


class StubResolver:
    """DNS for the test: fixed answers per name, and a count of the lookups made."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return list(self.answers[host])


def test_allowlisted_host_is_fetched(image_host):
    base, png, _ = image_host
    assert fetch(f"{base}/img.png") == png


def test_nothing_is_fetched_without_allowlist(image_host):
    base, _, _ = image_host
    with pytest.raises(InvalidInput, match="not fetched"):
        fetch(f"{base}/img.png", allowlist=())
    with pytest.raises(InvalidInput, match="not in ZEST_URL_ALLOWLIST"):
        fetch(f"{base}/img.png", allowlist=("images.example.com",))


def test_redirects_schemes_credentials_and_size(image_host):
    base, _, _ = image_host
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


# -- resolved addresses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"), ("169.254.169.254", "the cloud metadata address"),
    ("10.1.2.3", "a private address"), ("192.168.0.7", "a private address"), ("172.16.9.9", "a private address"),
    ("169.254.1.1", "a link-local address"), ("0.0.0.0", "an unspecified address"),
    ("224.0.0.1", "a multicast address"), ("240.0.0.1", "a reserved address"), ("100.64.0.1", "not a public"),
    ("::1", "a loopback address"), ("fe80::1", "a link-local address"), ("fc00::5", "a private address"),
    ("fd00:ec2::254", "the cloud metadata address"), ("::", "an unspecified address"),
    ("::ffff:127.0.0.1", "a loopback address in IPv6 form"), ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "a loopback address in IPv6 form"), ("64:ff9b::a9fe:a9fe", "metadata"),
])
def test_an_allowed_name_resolving_to_a_non_public_address_is_refused_naming_why(image_host, address, reason):
    _, _, server = image_host
    resolver = StubResolver({"images.example.com": [address]})
    served = len(server.hosts)
    with pytest.raises(InvalidInput, match="images.example.com") as info:
        fetch(f"http://images.example.com:{server.port}/img.png", allowlist=("images.example.com",),
              allow_private=(), resolver=resolver)
    message = str(info.value)
    assert reason in message and ipaddress.ip_address(address).compressed in message, message
    assert len(server.hosts) == served  # nothing was sent anywhere


def test_every_address_must_be_public_not_only_the_first(image_host):
    _, _, server = image_host
    resolver = StubResolver({"images.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                                    "127.0.0.1"]})
    with pytest.raises(InvalidInput, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        fetch(f"http://images.example.com:{server.port}/img.png", allowlist=("images.example.com",),
              allow_private=(), resolver=resolver)


def test_public_addresses_pass_and_metadata_never_does():
    public = ["93.184.215.14", "8.8.8.8", "2606:4700::6810:84e5", "::ffff:8.8.8.8"]
    assert [address_problem(ipaddress.ip_address(a)) for a in public] == [None] * 4
    for opted_in_refused in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "::ffff:169.254.169.254"):
        assert address_problem(ipaddress.ip_address(opted_in_refused), private_ok=True), opted_in_refused
    for opted_in_ok in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "fd12::1", "::1"):
        assert address_problem(ipaddress.ip_address(opted_in_ok), private_ok=True) is None, opted_in_ok


def test_a_loopback_image_server_is_fetched_only_when_opted_in(image_host, monkeypatch):
    """images.internal exists only in the stub, and the system resolver refuses every name during the test: the
    fetch reaching the server proves the connection went to the checked address with no second lookup, and with
    the name kept in the Host header."""
    real_getaddrinfo = socket.getaddrinfo

    def numeric_only(host, *args, **kwargs):
        ipaddress.ip_address(host)  # ValueError for a name: no name may be looked up again
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    _, png, server = image_host
    port = server.port
    url = f"http://images.internal:{port}/img.png"
    resolver = StubResolver({"images.internal": ["127.0.0.1"]})
    with pytest.raises(InvalidInput, match="a loopback address.*ZEST_URL_ALLOW_PRIVATE"):
        fetch(url, allowlist=("images.internal",), allow_private=(), resolver=resolver)
    with pytest.raises(InvalidInput, match="a loopback address"):  # opting in another host admits nothing here
        fetch(url, allowlist=("images.internal", "other.internal"), allow_private=("other.internal",),
              resolver=resolver)
    resolver.calls.clear()
    assert fetch(url, allowlist=(".internal",), allow_private=("images.internal",), resolver=resolver) == png
    assert resolver.calls == ["images.internal"]  # one lookup, the one that was checked
    assert server.hosts[-1] == f"images.internal:{port}"
    assert fetch(f"http://127.0.0.1:{port}/img.png", allowlist=("127.0.0.1",), allow_private=("127.0.0.1",)) == png
    with pytest.raises(InvalidInput, match="127.0.0.1, a loopback address"):  # a literal is checked the same way
        fetch(f"http://127.0.0.1:{port}/img.png", allowlist=("127.0.0.1",), allow_private=())


def self_signed(tmp_path, name: str):
    """A certificate for `name` signed by itself (no CA trusts it) and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_sends_the_name_in_sni_and_verifies_the_certificate(tmp_path):
    """The connection goes to the checked address, but TLS speaks to the name: the server sees SNI
    images.internal, and a certificate no CA signed is refused (verification stays on)."""
    import ssl

    cert, key = self_signed(tmp_path, "images.internal")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve_one():
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass  # the client hangs up: it does not trust this certificate

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    url = f"https://images.internal:{listener.getsockname()[1]}/img.png"
    try:
        with pytest.raises(InvalidInput, match="could not fetch image URL"):
            fetch(url, allowlist=("images.internal",), allow_private=("images.internal",),
                  resolver=StubResolver({"images.internal": ["127.0.0.1"]}))
        thread.join(10)
    finally:
        listener.close()
    assert seen == ["images.internal"]
