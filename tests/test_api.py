"""Issue #13, the API contract, against the real server (`bentoml serve`) on loopback with API keys on: the one
OpenAPI document (/docs.json, Swagger at /), the one error shape, the keys, the OpenAI-compatible /v1 endpoints
spoken to with the official `openai` package, and a bounded schemathesis run against the served document.

One server serves the whole module; keys come from a file (two keys), so the file form is the one exercised.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import requests

from tests.images import png
from tests.server import running_server

KEYS = ("zest-test-key-one-5f1c", "zest-test-key-two-9a7e")
AUTH = {"Authorization": f"Bearer {KEYS[0]}"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("api")
    keys = home / "api-keys"
    keys.write_text(f"# zest API keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
    with running_server(tiny_checkpoint, rec_model_dir, home, ZEST_API_KEYS=str(keys), ZEST_MAX_IMAGES="4",
                        ZEST_MAX_IMAGE_BYTES="200000", ZEST_MAX_LABELS="20", ZEST_MAX_TEXTS="8",
                        ZEST_MAX_TEXT_CHARS="2000", ZEST_MAX_REC_ITEMS="10") as srv:
        yield srv


def get(srv, path, **kw):
    return requests.get(f"{srv.url}{path}", timeout=30, **{"headers": AUTH, **kw})


def post(srv, path, **kw):
    return requests.post(f"{srv.url}{path}", timeout=60, **{"headers": AUTH, **kw})


def spec(srv) -> dict:
    r = requests.get(f"{srv.url}/docs.json", timeout=30)  # the docs need no key
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for word in words:
        assert word in body["error"], body
    return body["error"]


# -- one OpenAPI document -----------------------------------------------------------------------------------
def test_the_served_openapi_declares_a_request_body_on_every_post(server):
    doc = spec(server)
    operations = [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    posts = [(p, op) for m, p, op in operations if m == "POST"]
    assert len(posts) >= 9, [p for p, _ in posts]
    for path, op in posts:
        content = op.get("requestBody", {}).get("content", {})
        assert content, f"POST {path} declares no request body"
        for media in content.values():
            schema = media["schema"]
            if "$ref" in schema:
                schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            assert schema.get("properties"), (path, schema)
    # the multipart and the JSON forms of /classify and /embed/image, images as file uploads
    for path in ("/classify", "/embed/image"):
        content = doc["paths"][path]["post"]["requestBody"]["content"]
        assert list(content) == ["multipart/form-data", "application/json"], content
        images = content["multipart/form-data"]["schema"]["properties"]["images"]
        assert images["type"] == "array" and images["items"]["format"] == "binary"
    classify = doc["components"]["schemas"]["ClassifyRequest"]
    assert classify["required"] == ["images"]  # labels, unless an adapted `head` is named instead
    assert {"labels", "head", "templates", "top_k", "threshold"} <= set(classify["properties"])
    scoring = doc["components"]["schemas"]["ClassifyResponse"]["properties"]["scoring"]
    assert scoring["enum"] == ["softmax", "sigmoid"] and "logit_bias" in scoring["description"]
    form = doc["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["threshold"]["type"] == "number" and "sigmoid" in form["properties"]["threshold"][
        "description"]
    # every operation: its success, the one error model for its errors, never the 422 zest does not send
    for method, path, op in operations:
        responses = op["responses"]
        assert "200" in responses and "422" not in responses, (method, path, list(responses))
        for status, response in responses.items():
            if status[0] in "45" or status == "default":
                assert response["content"]["application/json"]["schema"] == \
                    {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
        if path not in ("/livez", "/readyz", "/healthz", "/metrics", "/ui", "/ui/{file}"):
            assert "401" in responses, (method, path)  # keys are on
        else:
            assert op["security"] == [] and "401" not in responses, (method, path)  # open without a key
    for path, statuses in {"/classify": {"400", "404", "413", "415", "503"}, "/items/{item_id}": {"404", "503"},
                           "/v1/embeddings": {"400", "404", "413", "415", "503"}}.items():
        assert statuses <= set(next(iter(doc["paths"][path].values()))["responses"]), path
    assert "Retry-After" in doc["paths"]["/classify"]["post"]["responses"]["503"]["headers"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {**doc["components"]["securitySchemes"]["bearerAuth"],
                                                                   "type": "http", "scheme": "bearer"}
    assert doc["paths"]["/readyz"]["get"]["security"] == [] and "503" in doc["paths"]["/readyz"]["get"]["responses"]


def test_one_spec_and_one_docs_ui(server):
    page = requests.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    init = requests.get(f"{server.url}/static_content/swagger-initializer.js", timeout=30)
    assert 'url: "./docs.json"' in init.text  # BentoML's Swagger UI reads /docs.json: the spec above
    assert spec(server)["info"]["title"] == "zest"
    for path in ("/openapi.json", "/docs", "/redoc"):  # FastAPI's second spec and its UIs are gone
        assert_error(get(server, path), 404, "no such endpoint")


def test_swagger_try_it_out_classifies_an_uploaded_image(server):
    """What Swagger's "Try it out" sends for /classify: the documented multipart form, field by field."""
    form = spec(server)["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    values = {"labels": "red square,blue circle", "templates": "photo", "top_k": "2"}
    assert set(form["properties"]) >= {"images", *values}
    files = [("images", ("red.png", png(), "image/png"))]
    r = post(server, "/classify", files=files, data={k: v for k, v in values.items() if k in form["properties"]})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["image"] == "red.png" and len(result["predictions"]) == 2


# -- one error shape ----------------------------------------------------------------------------------------
def test_unknown_route_is_404_in_the_error_shape(server):
    assert_error(get(server, "/no/such/thing"), 404, "no such endpoint", "GET /no/such/thing")
    assert_error(post(server, "/classify/extra", json={}), 404, "no such endpoint")


def test_wrong_method_is_405_in_the_error_shape_with_allow(server):
    r = requests.delete(f"{server.url}/classify", headers=AUTH, timeout=30)
    assert_error(r, 405, "DELETE", "/classify")
    assert r.headers["allow"] == "POST"
    r = requests.put(f"{server.url}/collections", headers=AUTH, timeout=30)
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, POST"  # both routes of the path, not only the first that matched
    r = requests.post(f"{server.url}/readyz", timeout=30)  # BentoML's own route: the same shape
    assert_error(r, 405, "POST")


def test_oversized_body_is_413_in_the_error_shape(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:  # declares 1 GB and sends a few bytes: refused on the declaration, before reading it
        sock.sendall(b"POST /embed/text HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEYS[0].encode() +
                     b"\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{\"texts\"")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), reply[:300]
    assert b"content-type: application/json" in head.lower()
    assert "over the limit" in json.loads(body)["error"]
    # limits inside a body that fits are 413s too
    assert_error(post(server, "/embed/text", json={"texts": ["t"] * 9}), 413, "limit of 8")


def test_malformed_json_unsupported_type_and_validation_in_the_error_shape(server):
    bad_json = post(server, "/embed/text", data=b'{"texts": ["a"', headers={**AUTH, "content-type": "application/json"})
    assert_error(bad_json, 400, "not valid JSON")
    assert_error(post(server, "/recommend", data=b"\xff\xfe", headers={**AUTH, "content-type": "application/json"}),
                 400, "not valid JSON")
    plain = post(server, "/embed/text", data=b'{"texts": ["a"]}', headers={**AUTH, "content-type": "text/plain"})
    assert_error(plain, 415, "text/plain", "application/json")
    form = post(server, "/classify", data=b"labels=a", headers={**AUTH, "content-type": "application/x-www-form-urlencoded"})
    assert_error(form, 415, "multipart/form-data")
    assert_error(post(server, "/embed/text", json={"text": ["a"]}), 400, "texts: Field required", "text: Extra inputs")
    assert_error(post(server, "/recommend", json={"history": ["x"], "k": "many"}), 400, "k:")
    assert post(server, "/embed/text", json={"texts": ["a"]}).status_code == 200  # still serving


# -- API keys -----------------------------------------------------------------------------------------------
def test_no_key_and_a_wrong_key_get_401_with_www_authenticate(server):
    for path, method in (("/templates", "get"), ("/classify", "post"), ("/v1/models", "get"), ("/nope", "get"),
                         ("/schema.json", "get")):
        r = getattr(requests, method)(f"{server.url}{path}", timeout=30)
        assert_error(r, 401, "Authorization: Bearer")
        assert r.headers["www-authenticate"] == 'Bearer realm="zest"'
        for header in (f"Bearer {KEYS[0]}x", "Bearer " + KEYS[0][:-1], f"Basic {KEYS[0]}", f"Bearer {KEYS[0].upper()}"):
            r = getattr(requests, method)(f"{server.url}{path}", headers={"Authorization": header}, timeout=30)
            assert r.status_code == 401, (path, header, r.text)
            assert r.headers["www-authenticate"].startswith('Bearer realm="zest"')
    r = requests.get(f"{server.url}/templates", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert_error(r, 401, "not valid")
    assert r.headers["www-authenticate"] == 'Bearer realm="zest", error="invalid_token"'


def test_every_configured_key_is_accepted(server):
    for key in KEYS:
        for scheme in ("Bearer", "bearer"):
            r = requests.get(f"{server.url}/templates", headers={"Authorization": f"{scheme} {key}"}, timeout=30)
            assert r.status_code == 200, r.text
    assert post(server, "/embed/text", json={"texts": ["a cat"]}).status_code == 200


def test_probes_metrics_and_docs_need_no_key(server):
    for path in ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/"):
        assert requests.get(f"{server.url}{path}", timeout=30).status_code == 200, path


def test_keys_are_never_logged_and_startup_says_keys_are_on(server):
    log = server.log(10**7)
    assert "API keys: on, 2 key(s) from the file" in log, log[-3000:]
    assert not any(key in log for key in KEYS)


# -- OpenAI-compatible embeddings, with the official client -------------------------------------------------
TEXTS = ["a photo of a cat", "a red square", "word " * 300]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[1], max_retries=0, timeout=60)


def test_openai_client_vectors_equal_embed_text(server, client):
    model = client.models.list().data[0].id
    assert model.startswith("local-dir:")
    expected = post(server, "/embed/text", json={"texts": TEXTS}).json()["embeddings"]
    got = client.embeddings.create(model=model, input=TEXTS)  # the client asks for base64 and decodes it
    assert [d.embedding for d in got.data] == expected
    assert [d.index for d in got.data] == [0, 1, 2] and got.model == model
    floats = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    assert [d.embedding for d in floats.data] == expected
    raw = client.embeddings.create(model=model, input=TEXTS, encoding_format="base64")
    assert np.frombuffer(base64.b64decode(raw.data[0].embedding), "<f4").tolist() == expected[0]
    one = client.embeddings.create(model=model, input="a photo of a cat", encoding_format="float", dimensions=32)
    assert one.data[0].embedding == post(server, "/embed/text", json={"texts": ["a photo of a cat"]}).json()["embeddings"][0]
    # usage: the tokens the text tower read -- CLIP's tokenizer, start and end tokens included, the long
    # text truncated to the 77-token context like the encoder truncates it
    assert one.usage.prompt_tokens == one.usage.total_tokens == 7  # <start> a photo of a cat <end>
    assert got.usage.prompt_tokens == 7 + 5 + 77


def test_openai_client_image_input_as_infinity_sends_it(server, client):
    model = client.models.list().data[0].id
    data = png("blue")
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    expected = post(server, "/embed/image", files=[("images", ("b.png", data, "image/png"))]).json()["embeddings"]
    for item in (uri, base64.b64encode(data).decode()):
        got = client.embeddings.create(model=model, input=[item], extra_body={"modality": "image"})
        assert [d.embedding for d in got.data] == expected
        assert got.usage.prompt_tokens == 0  # images are not tokens


def test_openai_client_errors(client):
    import openai

    model = client.models.list().data[0].id
    cases = [({"dimensions": 16}, openai.BadRequestError, "dimensions=16 is not supported"),
             ({"model": "text-embedding-3-small"}, openai.NotFoundError, "is not served here"),
             ({"input": [[101, 202]]}, openai.BadRequestError, "token arrays are not supported"),
             ({"input": []}, openai.BadRequestError, "input is empty"),
             ({"input": ["x"] * 9}, openai.APIStatusError, "limit of 8"),
             ({"extra_body": {"modality": "audio"}}, openai.BadRequestError, "modality"),
             ({"input": ["not an image"], "extra_body": {"modality": "image"}}, openai.BadRequestError, "base64")]
    for kwargs, error, message in cases:
        with pytest.raises(error) as info:
            client.embeddings.create(**{"model": model, "input": "a cat", **kwargs})
        assert message in info.value.body, (kwargs, info.value.body)  # the one error shape: body is the message
    with pytest.raises(openai.AuthenticationError):
        type(client)(base_url=str(client.base_url), api_key="wrong", max_retries=0).models.list()


# -- fuzzed: schemathesis against the served document ------------------------------------------------------
MAX_EXAMPLES = 12  # per operation and phase: ~300 requests in all, ~15 s on 2 cores


def test_schemathesis_finds_no_5xx_and_every_response_conforms(server, tmp_path):
    """Bounded: fuzzing + stateful phases, MAX_EXAMPLES per operation, one worker, a fixed seed and a time
    limit. Every check but `positive_data_acceptance`: schema-valid is not enough to be acceptable here
    (a base64 string must also be an image, labels must not repeat, an id must exist). The encoder service loads
    the recommender's text model (MiniLM) on the first item text: that one slow request is made here first, so the fuzzer's response-time check (10 s) sees warm endpoints."""
    warm = requests.post(f"{server.url}/items", json={"items": [{"id": "warm-up", "text": "a warm-up item"}]},
                         headers=AUTH, timeout=180)
    assert warm.status_code == 200, warm.text
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/docs.json",
           "-H", f"Authorization: Bearer {KEYS[0]}", "--phases", "fuzzing,stateful",
           "--max-examples", str(MAX_EXAMPLES), "--seed", "13", "--workers", "1", "--request-timeout", "30",
           "--checks", "all", "--exclude-checks", "positive_data_acceptance",
           # a free-form path parameter's only invalid value is "", which no URL can carry
           "--suppress-health-check", "filter_too_much",
           "--no-color"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)
    out = run.stdout + run.stderr
    summary = re.search(r"(\d+) generated, (\d+) (?:passed|found)", out)
    print("\n" + "\n".join(line for line in out.splitlines() if re.search(r"generated|passed|in \d", line)))
    assert run.returncode == 0, out[-6000:]
    assert summary and 100 <= int(summary.group(1)) <= 600, out[-2000:]
    assert not re.search(r"\b5\d\d\b.*(Internal|Server Error)", out)
    log = server.log(10**7)
    assert not re.findall(r"\(status=5\d\d,", log), "a 5xx in the server's access log"
