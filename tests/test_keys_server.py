"""Issue #23 against the real server (`bentoml serve`): scoped keys from a YAML key file (one stored hashed) on
every operation of the served OpenAPI document, per-collection keys, the access log, a rate limit, and image
URLs checked by the address they resolve to (an image server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from tests.http_fixtures import image_host
from tests.images import png
from tests.server import running_server

SECRETS = {"admin": "srv-admin-71f3", "writer": "srv-writer-c40e", "reader": "srv-reader-9ab2",
           "tenant": "srv-tenant-e5d1", "tenant-admin": "srv-tadmin-0c9f", "limited": "srv-limited-3b7a"}
KEY_FILE = f"""# zest API keys (tests/test_keys_server.py)
keys:
  - {{name: admin, key: {SECRETS['admin']}, scope: admin}}
  - {{name: writer, key: "sha256:{hashlib.sha256(SECRETS['writer'].encode()).hexdigest()}", scope: write}}
  - {{name: reader, key: {SECRETS['reader']}, scope: read}}
  - {{name: tenant, key: {SECRETS['tenant']}, scope: write, collections: [alpha]}}
  - {{name: tenant-admin, key: {SECRETS['tenant-admin']}, scope: admin, collections: [alpha, delta]}}
  - {{name: limited, key: {SECRETS['limited']}, scope: read, rate: 0.5, burst: 2}}
"""
LEVEL = {"read": 1, "write": 2, "admin": 3}
KEYS = {"admin": ("admin", None), "writer": ("write", None), "reader": ("read", None), "tenant": ("write", {"alpha"})}


@pytest.fixture(scope="module")
def image_server():
    with image_host(default=png("blue", (32, 32))) as host:
        yield host.port


@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory, image_server):
    home = tmp_path_factory.mktemp("keys-server")
    (home / "keys.yaml").write_text(KEY_FILE)
    with running_server(tiny_checkpoint, rec_model_dir, home, ZEST_API_KEYS=str(home / "keys.yaml"),
                        ZEST_URL_ALLOWLIST="localhost,127.0.0.1", ZEST_URL_ALLOW_PRIVATE="127.0.0.1") as srv:
        yield srv


def req(srv, method: str, path: str, key: str | None, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {SECRETS[key]}"} if key else {}
    return requests.request(method, f"{srv.url}{path}", headers=headers, timeout=60, **kw)


def concrete(template: str, collection: str) -> str:
    return (template.replace("{name}", collection).replace("{item_id}", "ghost-item")
            .replace("{model}", "ghost-model"))


def test_every_served_operation_enforces_its_scope(server):
    """Generated from the served document (itself from ROUTE_SCOPES): every operation, four kinds of key.
    Allowed calls send an empty body or name what does not exist, so nothing changes; they must get past the
    key check (not 401/403/429) and never a 5xx."""
    spec = requests.get(f"{server.url}/docs.json", timeout=30).json()
    operations = [(m.upper(), p, op["x-zest-scope"]) for p, item in spec["paths"].items() for m, op in item.items()
                  if "x-zest-scope" in op]
    assert len(operations) >= 19 and {s for *_, s in operations} == {"read", "write", "admin", "public"}
    for method, template, _ in [op for op in operations if op[2] == "public"]:  # the playground's page and files
        r = req(server, method, concrete(template, "alpha").replace("{file}", "app.js"), None)
        assert r.status_code == 200, (method, template, r.status_code)
    for method, template, needed in [op for op in operations if op[2] != "public"]:
        for key, (scope, collections) in KEYS.items():
            for collection in ("alpha", "ghost"):
                body = {"json": {}} if method == "POST" else {}
                r = req(server, method, concrete(template, collection), key, **body)
                why = f"{key} {method} {template} {collection}: {r.status_code} {r.text[:300]}"
                if LEVEL[scope] < LEVEL[needed]:
                    assert r.status_code == 403 and f"needs scope {needed}" in r.json()["error"], why
                elif collections and "{name}" in template and collection not in collections:
                    assert r.status_code == 403 and f"may not use the collection {collection!r}" in r.json()["error"], why
                elif collections and "{name}" not in template and needed != "read" and template != "/collections":
                    assert r.status_code == 403 and "limited to collections" in r.json()["error"], why
                else:
                    assert r.status_code not in (401, 403, 429) and r.status_code < 500, why
                    assert r.headers["content-type"].startswith("application/json"), why
            assert req(server, method, concrete(template, "alpha"), None).status_code == 401


def test_a_per_collection_key_works_in_its_collections_only(server):
    for name in ("alpha", "beta"):
        r = req(server, "POST", "/collections", "admin", json={"name": name})
        assert r.status_code in (200, 409), r.text
    item = {"items": [{"id": "t1", "text": "a red square", "metadata": {"k": 1}}]}
    r = req(server, "POST", "/collections/alpha/items", "tenant", json=item)
    assert r.status_code == 200, r.text
    r = req(server, "POST", "/collections/beta/items", "tenant", json=item)
    assert r.status_code == 403 and r.json() == {
        "error": "the API key 'tenant' may not use the collection 'beta' (it may use: alpha)"}
    r = req(server, "POST", "/collections/alpha/search", "tenant", json={"text": "red", "k": 1})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "t1", r.text
    assert [c["name"] for c in req(server, "GET", "/collections", "tenant").json()["collections"]] == ["alpha"]
    assert {"alpha", "beta"} <= {c["name"] for c in req(server, "GET", "/collections", "reader").json()["collections"]}
    assert req(server, "POST", "/embed/text", "tenant", json={"texts": ["a cat"]}).status_code == 200  # a read
    r = req(server, "POST", "/items", "tenant", json={"items": [{"id": "x", "text": "y"}]})
    assert r.status_code == 403 and "limited to collections (alpha)" in r.json()["error"]
    # an admin key limited to collections creates and drops only those (the name is in the body)
    r = req(server, "POST", "/collections", "tenant-admin", json={"name": "epsilon"})
    assert r.status_code == 403 and "may not use the collection 'epsilon'" in r.json()["error"], r.text
    assert req(server, "POST", "/collections", "tenant-admin", json={"name": "delta"}).status_code == 200
    assert req(server, "DELETE", "/collections/delta", "tenant-admin").status_code == 200
    assert req(server, "DELETE", "/collections/beta", "tenant-admin").status_code == 403
    r = req(server, "POST", "/collections/alpha/items", "reader", json=item)
    assert r.status_code == 403 and r.json()["error"] == (
        "the API key 'reader' has scope read; POST /collections/{name}/items needs scope write or admin")
    r = req(server, "POST", "/collections", "writer", json={"name": "zeta"})  # the hashed key
    assert r.status_code == 403 and "'writer' has scope write; POST /collections needs scope admin" in r.text


def test_the_access_log_names_the_key_of_every_write_never_the_key(server):
    assert req(server, "DELETE", "/collections/alpha/items/t1", "tenant").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "DELETE /collections/alpha/items/t1 -> 200, key 'tenant'" not in server.log(10**7):
        time.sleep(0.2)
    log = server.log(10**7)
    assert "DELETE /collections/alpha/items/t1 -> 200, key 'tenant'" in log, log[-3000:]
    assert "POST /collections/beta/items -> 403, key 'tenant'" in log
    assert "POST /collections -> 200, key 'tenant-admin'" in log
    assert "API keys: on, 6 key(s) from the file" in log and "(read 2, write 2, admin 2; 2 limited" in log
    assert not any(secret in log for secret in SECRETS.values())
    assert hashlib.sha256(SECRETS["writer"].encode()).hexdigest() not in log


def test_a_rate_limited_key_gets_429_with_retry_after(server):
    """rate 0.5/s, burst 2: two requests pass, the next ones within 2 s are refused."""
    codes = [req(server, "GET", "/templates", "limited") for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200], [r.text for r in codes]
    refused = codes[2]
    assert refused.status_code == 429 and refused.headers["retry-after"] in ("1", "2"), refused.text
    assert "over its rate limit (0.5 requests/s, burst 2)" in refused.json()["error"]
    assert req(server, "GET", "/templates", "reader").status_code == 200  # other keys are not limited
    time.sleep(int(refused.headers["retry-after"]) + 0.2)
    assert req(server, "GET", "/templates", "limited").status_code == 200


def test_image_urls_are_fetched_only_from_checked_addresses(server, image_server):
    r = req(server, "POST", "/embed/image", "reader",
            json={"images": [{"url": f"http://localhost:{image_server}/cat.png"}]})
    assert r.status_code == 400 and "a loopback address" in r.json()["error"], r.text
    assert "resolves to" in r.json()["error"] and "ZEST_URL_ALLOW_PRIVATE" in r.json()["error"]
    r = req(server, "POST", "/embed/image", "reader",
            json={"images": [{"url": f"http://127.0.0.1:{image_server}/cat.png"}]})  # opted in
    assert r.status_code == 200 and len(r.json()["embeddings"]) == 1, r.text
