"""Issue 20, typed routes: each rule on a request is declared once -- models/limits.py's constants, in the schemas'
`Field`s and the routes' `Path`s -- and the OpenAPI document states the same rule that is enforced. In process: the
public app's routes with their service instance replaced (validation happens before a route's body runs)."""

from __future__ import annotations

import bentoml
import pytest
from starlette.testclient import TestClient

from zest.models.limits import COLLECTION_NAME_PATTERN, MAX_ID_CHARS, MIN_K
from zest.service import app as service_app
from zest.store.base import NAME_RE

TOO_LONG = "x" * (MAX_ID_CHARS + 1)
PNG = ("a.png", b"\x89PNG not read: validation fails first", "image/png")


@pytest.fixture(scope="module")
def client():
    """The app, each route's `self` (BentoML's service) a stand-in that a route never reaches here."""
    app = service_app.app

    class Unreachable:
        def __getattr__(self, name):
            raise AssertionError(f"the route ran ({name}): validation should have refused the request")

    app.dependency_overrides[bentoml.get_current_service] = Unreachable  # what BentoML binds `self` with
    yield TestClient(app, raise_server_exceptions=True)
    app.dependency_overrides.pop(bentoml.get_current_service, None)


def _schema(doc: dict, ref_or_schema: dict) -> dict:
    ref = ref_or_schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else ref_or_schema


def test_the_document_states_the_item_id_limit_and_name_pattern_the_stores_keep(client):
    doc = service_app.app.openapi()
    paths = [(p, op) for p, item in doc["paths"].items() for op in item.values()]
    id_params = [param["schema"] for _, op in paths for param in op.get("parameters", []) if param["name"] == "item_id"]
    name_params = [param["schema"] for _, op in paths for param in op.get("parameters", []) if param["name"] == "name"]
    assert len(id_params) >= 5 and len(name_params) >= 7
    assert all(s["maxLength"] == MAX_ID_CHARS and s["minLength"] == 1 for s in id_params)
    assert all(s["pattern"] == COLLECTION_NAME_PATTERN for s in name_params)
    assert NAME_RE.pattern == COLLECTION_NAME_PATTERN
    schemas = doc["components"]["schemas"]
    for model, field in (("ItemIn", "id"), ("CollectionItemIn", "id")):
        assert schemas[model]["properties"][field]["maxLength"] == MAX_ID_CHARS, model
    like = schemas["CollectionSearchRequest"]["properties"]["like"]["anyOf"][0]
    history = schemas["RecommendRequest"]["properties"]["history"]["items"]
    assert like["maxLength"] == history["maxLength"] == MAX_ID_CHARS
    assert schemas["CollectionCreateRequest"]["properties"]["name"]["pattern"] == COLLECTION_NAME_PATTERN
    for model, field in (("RecommendRequest", "k"), ("CollectionSearchRequest", "k")):
        assert schemas[model]["properties"][field]["minimum"] == MIN_K
    form = doc["paths"]["/collections/{name}/search"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["k"]["minimum"] == MIN_K
    assert form["schema"]["properties"]["images"]["maxItems"] == 1


def test_every_json_body_is_its_model_in_the_document(client):
    doc = service_app.app.openapi()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "post":
                media = op["requestBody"]["content"]["application/json"]
                assert _schema(doc, media["schema"]).get("properties"), path


@pytest.mark.parametrize("method, path, kwargs", [
    ("get", f"/items/{TOO_LONG}", {}),
    ("delete", f"/items/{TOO_LONG}", {}),
    ("post", "/items", {"json": {"items": [{"id": TOO_LONG, "text": "t"}]}}),
    ("post", "/recommend", {"json": {"history": [TOO_LONG]}}),
    ("post", "/recommend", {"json": {"history": ["a"], "candidates": [TOO_LONG]}}),
    ("post", "/collections/c/items", {"json": {"items": [{"id": TOO_LONG, "text": "t"}]}}),
    ("post", "/collections/c/items", {"files": [("images", PNG)], "data": {"ids": f'["{TOO_LONG}"]'}}),
    ("post", "/collections/c/search", {"json": {"like": TOO_LONG}}),
    ("get", f"/collections/c/items/{TOO_LONG}", {}),
    ("delete", f"/collections/c/items/{TOO_LONG}", {}),
    ("get", f"/collections/c/items/{TOO_LONG}/thumbnail", {}),
])
def test_an_id_over_the_limit_is_a_400_on_every_route_that_takes_one(client, method, path, kwargs):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("invalid request: ") and f"at most {MAX_ID_CHARS} characters" in r.text


@pytest.mark.parametrize("method, path, kwargs, where", [
    ("post", "/collections", {"json": {"name": "bad-name"}}, "name"),
    ("get", "/collections/bad-name", {}, "name"),
    ("post", "/collections/bad-name/search", {"json": {"text": "x"}}, "name"),
    ("post", "/classify", {"json": {"images": ["x"], "labels": ["a"], "top_k": 0}}, "top_k"),
    ("post", "/classify", {"files": [("images", PNG)], "data": {"labels": "a,b", "top_k": "0"}}, "top_k"),
    ("post", "/classify", {"json": {"images": ["x"], "threshold": 2}}, "threshold"),
    ("post", "/classify", {"json": {"images": ["x"], "top_k": True}}, "top_k"),
    ("post", "/embed/image", {"json": {"images": []}}, "images"),
    ("post", "/embed/image", {"files": [("other", PNG)]}, "images"),
    ("post", "/embed/text", {"json": {"texts": []}}, "texts"),
    ("post", "/recommend", {"json": {"history": ["a"], "k": 0}}, "k"),
    ("post", "/collections/c/search", {"json": {"text": "x", "k": 0}}, "k"),
    ("post", "/collections/c/search", {"files": [("images", PNG), ("images", PNG)]}, "images"),
    ("post", "/collections/c/items", {"files": [("images", PNG)], "data": {"ids": '["a", "b"]'}}, "one id per image"),
    ("post", "/v1/embeddings", {"json": {"model": "m", "input": [1, 2]}}, "token arrays"),
])
def test_bad_fields_are_400s_naming_the_field(client, method, path, kwargs, where):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and where in r.json()["error"]


def test_body_limits_and_content_types_are_still_checked_before_validation(client):
    r = client.post("/embed/text", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = client.post("/classify", content=b"labels=a", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/embed/text", content=b'{"texts": ["a"]', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = client.post("/embed/text", content=b"{}", headers={"content-type": "application/json",
                                                          "content-length": str(10**12)})
    assert r.status_code == 413
