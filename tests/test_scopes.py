"""Scoped API keys in process (service/auth.py, service/scopes.py, service/keyfile.py, service/ratelimit.py).

The scope tests are generated from the app's own route table (`zest.service.app.app.routes`), not a list: every
route, every method, every kind of key, through the real `ApiKeyMiddleware` in front of an app that records what
reached it. A route added without a scope fails `check_table` (the service does not start) and these tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from zest.service import app as service_app
from zest.service.auth import ApiKeyMiddleware, load_api_keys
from zest.service.keyfile import Scope
from zest.service.ratelimit import TokenBucket, retry_after
from zest.service.scopes import KEY_IN_SCOPE, app_routes, check_table, route_keys

TABLE = service_app.ROUTE_SCOPES
ROUTES = [(route, key) for route in app_routes(service_app.app.routes) for key in route_keys(route)]
SECRETS = {"admin": "adm-4b1f9e", "writer": "wrt-77c0aa", "reader": "rdr-0d3e19", "tenant-admin": "tna-9f8e21",
           "tenant-reader": "tnr-5a6b7c", "limited": "lim-1c2d3e"}
KEY_FILE = {"keys": [
    {"name": "admin", "key": SECRETS["admin"], "scope": "admin"},
    {"name": "writer", "key": "sha256:" + hashlib.sha256(SECRETS["writer"].encode()).hexdigest(), "scope": "write"},
    {"name": "reader", "key": SECRETS["reader"]},  # scope defaults to read
    {"name": "tenant-admin", "key": SECRETS["tenant-admin"], "scope": "admin", "collections": ["alpha"]},
    {"name": "tenant-reader", "key": SECRETS["tenant-reader"], "scope": "read", "collections": ["alpha", "gamma"]},
    {"name": "limited", "key": SECRETS["limited"], "scope": "read", "rate": 2, "burst": 3},
]}
SCOPE_OF = {"admin": Scope.admin, "writer": Scope.write, "reader": Scope.read, "tenant-admin": Scope.admin,
            "tenant-reader": Scope.read}
COLLECTIONS_OF = {"tenant-admin": {"alpha"}, "tenant-reader": {"alpha", "gamma"}}


ROUTE_OF = {key: route for route, key in ROUTES}


def concrete(path: str, collection: str) -> str:
    """A request path for a route's template: the collection parameter as given, the others filled in (with a
    '/' where the route's parameter takes one, `{item_id:path}`)."""
    route = next(r for k, r in ROUTE_OF.items() if k.split(" ", 1)[1] == path)
    for param, convertor in route.param_convertors.items():
        value = collection if param == "name" else f"{param}-1"
        if type(convertor).__name__ == "PathConvertor":
            value = f"dir/{value}"
        path = path.replace("{" + param + "}", value)
    return path


def reached_app(scope, receive, send):
    """The app behind the middleware: answers 200 with the route it was asked for and the key it was given."""
    async def run():
        key = scope.get(KEY_IN_SCOPE)
        body = json.dumps({"path": scope["path"], "key": key.name if key else None}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    return run()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    path.write_text(json.dumps(KEY_FILE))  # JSON is YAML: one loader reads both
    return load_api_keys(str(path))


@pytest.fixture
def client(keys):
    middleware = ApiKeyMiddleware(reached_app, keys, lambda: service_app.app.routes, TABLE)
    return TestClient(middleware, raise_server_exceptions=True)


def call(client, key_name: str | None, route_key: str, collection: str = "alpha"):
    method, path = route_key.split(" ", 1)
    headers = {"Authorization": f"Bearer {SECRETS[key_name]}"} if key_name else {}
    return client.request(method, concrete(path, collection), headers=headers)


def expected(key_name: str, route_key: str, collection: str) -> str | None:
    """What the middleware must refuse, from the table and the key file (None: allowed)."""
    access = TABLE[route_key]
    if access.scope is None:
        return None
    if SCOPE_OF[key_name] < access.scope:
        return f"needs scope {access.scope.name}"
    limited = COLLECTIONS_OF.get(key_name)
    if limited is None:
        return None
    if access.collection is None:
        return None if access.scope is Scope.read else "limited to collections"
    if access.collection in ("body", "list"):
        return None  # checked or filtered by the route itself (tests below and tests/test_keys_server.py)
    return None if collection in limited else f"may not use the collection {collection!r}"


def test_the_table_names_every_route_of_the_app_and_nothing_else():
    assert sorted(k for _, k in ROUTES) == sorted(TABLE)
    assert len(ROUTES) >= 20
    check_table(service_app.app.routes, TABLE)


def test_a_route_without_a_scope_stops_the_service():
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/new/{thing}")
    def new(thing: str):
        return {}

    @app.post("/collections")
    def create():
        return {}

    with pytest.raises(ValueError, match=r"no scope for GET /new/\{thing\}") as info:
        check_table(app.routes, {"POST /collections": TABLE["POST /collections"], "GET /gone": TABLE["GET /heads"]})
    assert "no route for GET /gone" in str(info.value)


def test_a_mounted_app_has_one_entry_for_everything_under_it(keys):
    """e.g. a static page mounted at /ui: public in the table, so a browser loads it without a key."""
    from zest.service.scopes import PUBLIC, READ

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.mount("/ui", reached_app)

    @app.get("/x")
    def x():
        return {}

    with pytest.raises(ValueError, match=r"no scope for GET /ui/\{path\}"):
        check_table(app.routes, {"GET /x": READ})
    table = {"GET /x": READ, "GET /ui/{path}": PUBLIC}
    check_table(app.routes, table)
    client = TestClient(ApiKeyMiddleware(reached_app, keys, lambda: app.routes, table))
    assert client.get("/ui/index.html").status_code == 200 and client.get("/ui/js/app.js").status_code == 200
    assert client.get("/x").status_code == 401 and client.post("/ui/index.html").status_code == 401
    assert client.get("/x", headers={"Authorization": f"Bearer {SECRETS['reader']}"}).status_code == 200


@pytest.mark.parametrize("route_key", sorted(TABLE))
@pytest.mark.parametrize("key_name", sorted(SCOPE_OF))
def test_each_scope_is_allowed_or_refused_on_every_route(client, key_name, route_key):
    for collection in ("alpha", "beta"):
        r = call(client, key_name, route_key, collection)
        refused = expected(key_name, route_key, collection)
        if refused is None:
            assert r.status_code == 200, (key_name, route_key, collection, r.text)
            assert r.json()["key"] == (key_name if TABLE[route_key].scope is not None else None)
        else:
            assert r.status_code == 403, (key_name, route_key, collection, r.text)
            error = r.json()["error"]
            assert list(r.json()) == ["error"] and refused in error and repr(key_name) in error, error
            assert not any(secret in error for secret in SECRETS.values())


@pytest.mark.parametrize("route_key", sorted(TABLE))
def test_no_key_or_a_wrong_key_is_401_on_every_non_public_route(client, route_key):
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": f"Bearer {SECRETS['admin']}x"}):
        method, path = route_key.split(" ", 1)
        r = client.request(method, concrete(path, "alpha"), headers=headers)
        if TABLE[route_key].scope is None:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 401 and "www-authenticate" in r.headers, (route_key, r.text)


def test_scope_names_in_the_refusal(client):
    r = call(client, "reader", "DELETE /collections/{name}/items/{item_id}")
    assert r.json() == {"error": "the API key 'reader' has scope read; DELETE /collections/{name}/items/{item_id} "
                                 "needs scope write or admin"}
    r = call(client, "writer", "POST /collections")
    assert r.json() == {"error": "the API key 'writer' has scope write; POST /collections needs scope admin"}
    r = call(client, "tenant-admin", "DELETE /collections/{name}", "beta")
    assert r.json() == {"error": "the API key 'tenant-admin' may not use the collection 'beta' (it may use: alpha)"}
    r = call(client, "tenant-admin", "POST /items")
    assert r.status_code == 403 and "limited to collections (alpha)" in r.json()["error"]


def test_unknown_paths_need_a_valid_key_and_then_pass_to_routing(client):
    assert client.get("/no/such/route").status_code == 401
    r = client.get("/no/such/route", headers={"Authorization": f"Bearer {SECRETS['reader']}"})
    assert r.status_code == 200  # the app behind answers (the real one: 404 in the error shape)
    r = client.put("/collections/alpha", headers={"Authorization": f"Bearer {SECRETS['reader']}"})
    assert r.status_code == 200  # a method no route has: routing answers 405


def test_probes_metrics_and_swagger_are_open(client):
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/", "/static_content/swagger-ui.css", "/docs.json"):
        assert client.get(path).status_code == 200, path


def test_routes_that_read_the_collection_from_the_body_or_list_them(keys):
    from zest.service.scopes import Forbidden, check_collection, visible_collections

    by_name = {k.name: k for k in keys.keys}
    listed = {"collections": [{"name": n} for n in ("alpha", "beta", "gamma")]}
    assert visible_collections({KEY_IN_SCOPE: by_name["tenant-reader"]}, listed) == {
        "collections": [{"name": "alpha"}, {"name": "gamma"}]}
    assert visible_collections({KEY_IN_SCOPE: by_name["admin"]}, listed) == listed
    assert visible_collections({}, listed) == listed  # keys off
    check_collection({KEY_IN_SCOPE: by_name["tenant-admin"]}, "alpha")
    check_collection({KEY_IN_SCOPE: by_name["admin"]}, "beta")
    with pytest.raises(Forbidden, match="'tenant-admin' may not use the collection 'beta'"):
        check_collection({KEY_IN_SCOPE: by_name["tenant-admin"]}, "beta")


def test_every_write_is_logged_with_the_key_name_never_the_key(client, caplog):
    caplog.set_level(logging.INFO, logger="zest.access")
    writes = sorted(k for k, a in TABLE.items() if a.scope is not None and a.scope >= Scope.write)
    assert writes  # items, collection items, collections
    for route_key in writes:
        caplog.clear()
        assert call(client, "admin", route_key).status_code == 200
        method, path = route_key.split(" ", 1)
        lines = [r.getMessage() for r in caplog.records if r.name == "zest.access"]
        assert lines == [f"{method} {concrete(path, 'alpha')} -> 200, key 'admin', from testclient"], lines
    caplog.clear()
    call(client, "reader", "POST /items")  # a refused write is logged too
    call(client, "reader", "GET /templates")  # a read is not
    lines = [r.getMessage() for r in caplog.records if r.name == "zest.access"]
    assert lines == ["POST /items -> 403, key 'reader', from testclient"], lines
    assert not any(secret in caplog.text for secret in SECRETS.values())


def test_the_openapi_document_states_each_operations_scope(keys):
    spec = service_app.app.openapi()
    seen = set()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            access = TABLE.get(f"{method.upper()} {path}")
            if access is None:
                assert operation.get("tags") == ["Infrastructure"], (method, path)  # BentoML's probes
                continue
            seen.add(f"{method.upper()} {path}")
            name = access.scope.name if access.scope else "public"
            assert operation["x-zest-scope"] == name and f"API key scope: **{name}**" in operation["description"]
    assert seen == {k for k in TABLE if k != "GET /docs.json"}  # the document does not list itself


# -- rate limits ------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token comes back in 1/rate s
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() == 0.0 and bucket.take() == pytest.approx(0.5)
    clock.now += 60  # refills to the burst, not beyond
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)
    assert retry_after(0.01) == 1 and retry_after(1.2) == 2


def test_a_rate_limited_key_gets_429_with_retry_after(keys, caplog):
    clock = FakeClock()
    buckets = {"limited": TokenBucket(2, 3, clock=clock)}
    client = TestClient(ApiKeyMiddleware(reached_app, keys, lambda: service_app.app.routes, TABLE, buckets=buckets))
    auth = {"Authorization": f"Bearer {SECRETS['limited']}"}
    assert [client.get("/templates", headers=auth).status_code for _ in range(3)] == [200] * 3
    r = client.get("/templates", headers=auth)
    assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
    assert re.fullmatch(r"the API key 'limited' is over its rate limit \(2 requests/s, burst 3\): retry after 1 s",
                        r.json()["error"])
    other = {"Authorization": f"Bearer {SECRETS['reader']}"}
    assert client.get("/templates", headers=other).status_code == 200  # per key: the others are not limited
    clock.now += 0.5
    assert client.get("/templates", headers=auth).status_code == 200
    assert client.get("/templates", headers=auth).status_code == 429
    assert client.get("/livez").status_code == 200  # probes are never limited


def test_the_buckets_come_from_the_key_file(keys):
    middleware = ApiKeyMiddleware(reached_app, keys, lambda: service_app.app.routes, TABLE)
    assert {name: (b.rate, b.burst) for name, b in middleware.buckets.items()} == {"limited": (2.0, 3)}
