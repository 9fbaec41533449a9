"""End-to-end: the real server (`bentoml serve`) on loopback, spoken to over HTTP."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import numpy as np
import pytest
import requests
from PIL import Image

from tests.images import b64, encode, png
from tests.server import Server, running_server
from zest.models.limits import too_large

SIZE = (48, 48)  # the images these tests send

LIMITS = {"ZEST_MAX_IMAGES": "4", "ZEST_MAX_IMAGE_BYTES": "200000", "ZEST_MAX_IMAGE_PIXELS": "1000000",
          "ZEST_MAX_LABELS": "50", "ZEST_MAX_TEXTS": "8", "ZEST_MAX_REC_ITEMS": "10"}


def start(tiny_checkpoint, rec_model_dir, home, data_dir) -> AbstractContextManager[Server]:
    return running_server(tiny_checkpoint, rec_model_dir, home, ZEST_DATA_DIR=str(data_dir), **LIMITS)


@pytest.fixture(scope="module")
def server(tiny_checkpoint, rec_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    with start(tiny_checkpoint, rec_model_dir, home, home / "data") as srv:
        yield srv


def classify_json(server, **body):
    body = {"images": [b64(png("red", SIZE))], "labels": ["cat", "dog", "car"], **body}
    return requests.post(f"{server.url}/classify", json=body, timeout=60)


def test_classify_multipart(server):
    r = requests.post(f"{server.url}/classify",
                      files=[("images", ("red.png", png("red", SIZE), "image/png")),
                             ("images", ("blue.png", png("blue", SIZE), "image/png"))],
                      data={"labels": "cat,dog,car", "top_k": "2", "templates": "imagenet"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["templates"] == {"name": "imagenet", "count": 80}
    assert body["scoring"] == "softmax" and body["threshold"] is None  # a CLIP: shared-out probabilities
    assert body["model"].startswith("local-dir:")
    assert [res["image"] for res in body["results"]] == ["red.png", "blue.png"]
    for res in body["results"]:
        probs = [p["probability"] for p in res["predictions"]]
        assert len(probs) == 2 and probs == sorted(probs, reverse=True)
        assert {p["label"] for p in res["predictions"]} <= {"cat", "dog", "car"}


def test_classify_json_with_user_templates(server):
    r = classify_json(server, templates=["a photo of a {}.", "a drawing of a {}."], top_k=10)
    assert r.status_code == 200, r.text
    preds = r.json()["results"][0]["predictions"]
    assert len(preds) == 3
    assert sum(p["probability"] for p in preds) == pytest.approx(1, abs=1e-4)
    assert r.json()["templates"] == {"name": "custom", "count": 2}


def test_embeddings_are_unit_norm(server):
    r = requests.post(f"{server.url}/embed/text", json={"texts": ["a cat", "word " * 500]}, timeout=60)
    assert r.status_code == 200, r.text  # over-long text is truncated, not refused
    body = r.json()
    emb = np.array(body["embeddings"])
    assert body["dim"] == 32 and emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    r = requests.post(f"{server.url}/embed/image", files=[("images", ("x.png", png("red", SIZE), "image/png"))],
                      timeout=60)
    assert r.status_code == 200, r.text
    emb = np.array(r.json()["embeddings"])
    assert emb.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    r2 = requests.post(f"{server.url}/embed/image", json={"images": [{"base64": b64(png("red", SIZE)), "name": "x"}]},
                       timeout=60)
    np.testing.assert_allclose(np.array(r2.json()["embeddings"]), emb, atol=1e-6)


def test_templates_and_probes(server):
    r = requests.get(f"{server.url}/templates", timeout=10)
    names = {s["name"]: s for s in r.json()["template_sets"]}
    assert len(names["imagenet"]["templates"]) == 80
    for probe in ("readyz", "livez", "healthz"):
        assert requests.get(f"{server.url}/{probe}", timeout=10).status_code == 200
    metrics = requests.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "bentoml_service_request_total" in metrics.text


def _bomb() -> bytes:
    return encode(Image.new("L", (4000, 4000)), optimize=True)


def _noise_png(side: int) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(arr))


BAD_JSON_BODIES = {
    "not an image": ({"images": [b64(b"hello world")]}, 400, "not a decodable image"),
    "not base64": ({"images": ["%%%not-base64%%%"]}, 400, "base64"),
    "truncated": ({"images": [b64(_noise_png(64)[:300])]}, 400, "truncated"),
    "oversized bytes": ({"images": [b64(_noise_png(300))]}, 413, "over the limit"),
    "decompression bomb": ({"images": [b64(_bomb())]}, 413, "decompression bomb"),
    "no labels": ({"labels": []}, 400, "labels is empty"),
    "duplicate labels": ({"labels": ["cat", "dog", "cat"]}, 400, "more than once"),
    "blank label": ({"labels": ["cat", " "]}, 400, "blank"),
    "too many labels": ({"labels": [f"class {i}" for i in range(51)]}, 413, "limit of 50"),
    "no placeholder": ({"templates": ["a photo"]}, 400, "no {} placeholder"),
    "two placeholders": ({"templates": ["{} and {}"]}, 400, "2 placeholders"),
    "format injection": ({"templates": ["{0.__class__}"]}, 400, "bare {}"),
    "unknown template set": ({"templates": "nope"}, 404, "unknown template set"),
    "top_k zero": ({"top_k": 0}, 400, "top_k"),
    "threshold on a softmax model": ({"threshold": 0.5}, 400, "scoring is softmax"),
    "too many images": ({"images": [b64(png("red", SIZE))] * 5}, 413, "limit of 4"),
    "no images": ({"images": []}, 400, "images: List should have at least 1 item"),
    "url without allowlist": ({"images": [{"url": "http://127.0.0.1:9/x.png"}]}, 400, "not fetched"),
    "unknown field": ({"lables": ["x"]}, 400, "lables"),
}


@pytest.mark.parametrize("case", list(BAD_JSON_BODIES))
def test_bad_input_gets_4xx_and_server_keeps_serving(server, case):
    body, status, message = BAD_JSON_BODIES[case]
    r = classify_json(server, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert classify_json(server).status_code == 200  # the worker is still serving


def test_bad_multipart_and_bodies(server):
    cases = [
        ({"files": [("images", ("t.txt", b"just text", "text/plain"))], "data": {"labels": "a,b"}}, 400),
        ({"files": [("images", ("x.png", png("red", SIZE), "image/png"))], "data": {"labels": "a,b", "top_k": "many"}},
         400),
        ({"files": [("images", ("x.png", png("red", SIZE), "image/png"))]}, 400),  # labels missing
        ({"data": b"\x00\xff\x10", "headers": {"content-type": "application/json"}}, 400),
        ({"data": b"{}", "headers": {"content-type": "application/json"}}, 400),
    ]
    for kwargs, status in cases:
        r = requests.post(f"{server.url}/classify", timeout=60, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert "error" in r.json()
    r = requests.post(f"{server.url}/embed/text", json={"texts": [f"t{i}" for i in range(9)]}, timeout=10)
    assert r.status_code == 413
    r = requests.post(f"{server.url}/embed/text", json={"texts": []}, timeout=10)
    assert r.status_code == 400
    assert classify_json(server).status_code == 200


def _batch_histogram(server) -> tuple[float, float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    pat = r'zest_encoder_batch_size_(sum|count)\{[^}]*kind="pixels"[^}]*\} ([0-9.e+]+)'
    found = {kind: float(v) for kind, v in re.findall(pat, text)}
    return found.get("sum", 0.0), found.get("count", 0.0)


def test_concurrent_single_image_requests_are_batched(server):
    sum0, count0 = _batch_histogram(server)
    n = 32
    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(lambda i: classify_json(server, images=[b64(png((i * 7 % 255, 0, 0), SIZE))]),
                                  range(n)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    sum1, count1 = _batch_histogram(server)
    images, batches = sum1 - sum0, count1 - count0
    assert images == n  # every image went through the encoder's batcher
    assert batches < n, f"{n} concurrent requests ran as {batches} batches: no batching happened"


ITEMS = [{"id": "m1", "text": "A space opera with starships and rebels"},
         {"id": "m2", "text": "A romantic comedy set in Paris"},
         {"id": "m3", "text": "A nature documentary about whales"}]


def test_items_and_recommend_over_http(server):
    r = requests.post(f"{server.url}/items", json={"items": ITEMS}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 3
    assert requests.get(f"{server.url}/items/m2", timeout=10).json()["text"] == ITEMS[1]["text"]
    r = requests.post(f"{server.url}/recommend", json={"history": ["m1"], "k": 5}, timeout=60)
    assert r.status_code == 200, r.text
    assert sorted(i["id"] for i in r.json()["items"]) == ["m2", "m3"]  # history excluded
    r = requests.post(f"{server.url}/items", json={"items": [{"id": "m4", "text": "A sci-fi war in space"}]},
                      timeout=60)
    ranked = requests.post(f"{server.url}/recommend", json={"history": ["m1"], "k": 5}, timeout=60).json()
    assert "m4" in [i["id"] for i in ranked["items"]]  # recommendable at once, no retraining
    r = requests.post(f"{server.url}/recommend", timeout=60,
                      json={"history_texts": ["I love space films"], "candidates": ["m2", "m3"], "k": 1})
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    assert requests.delete(f"{server.url}/items/m4", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/items/m4", timeout=10).status_code == 404


def test_served_item_texts_get_the_in_process_minilm_vectors(server, rec_model_dir):
    """Served, the item texts are embedded by the encoder service (issue #24); the ranking and its scores are
    those of the same model with MiniLM in this process (`zest rec`, training), to float32 precision."""
    from zest.models.rec.zesrec import load

    items = [{"id": f"v{i}", "text": t} for i, t in enumerate(
        ["A heist thriller in a casino", "An animated fable about a fox", "A courtroom drama in 1950s Alabama",
         "A cooking contest between rival chefs"])]
    history_texts = ["a tense bank robbery", "talking animals in a forest"]  # texts no other test sends
    assert requests.post(f"{server.url}/items", json={"items": items}, timeout=120).status_code == 200
    ids = [i["id"] for i in items]
    r = requests.post(f"{server.url}/recommend", timeout=120,
                      json={"history_texts": history_texts, "candidates": ids, "k": len(ids)})
    assert r.status_code == 200, r.text
    served = [(i["id"], i["score"]) for i in r.json()["items"]]

    model = load(rec_model_dir)  # its TextEncoder runs MiniLM here
    scores = model.embed_items([i["text"] for i in items]) @ model.user_vector(model.embed_items(history_texts))
    expected = sorted(zip(ids, scores.tolist()), key=lambda p: -p[1])
    assert [i for i, _ in served] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in served], [s for _, s in expected], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path, body, status, message", [
    ("/recommend", {"history": ["ghost"]}, 404, "unknown item id"),
    ("/recommend", {"history": []}, 400, "history is empty"),
    ("/recommend", {"history": ["m1"], "k": 0}, 400, "k: Input should be greater than or equal to 1"),
    ("/recommend", {"history": ["m1"], "candidates": ["m2", "ghost"]}, 404, "candidates"),
    ("/recommend", {"history": "m1"}, 400, "history"),
    ("/items", {"items": [{"id": f"x{i}", "text": "t"} for i in range(11)]}, 413, "limit is 10"),
    ("/items", {"items": [{"id": "x", "text": ""}]}, 400, "items.0.text"),
    ("/items", {"items": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]}, 400, "twice"),
    ("/items", {"things": []}, 400, "invalid request"),
])
def test_recommender_bad_input_gets_4xx(server, path, body, status, message):
    requests.post(f"{server.url}/items", json={"items": ITEMS}, timeout=60)
    r = requests.post(f"{server.url}{path}", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert requests.post(f"{server.url}/recommend", json={"history": ["m1"]}, timeout=60).status_code == 200
    assert requests.delete(f"{server.url}/items/ghost", timeout=10).status_code == 404


def test_recommender_user_errors_cross_to_the_client_with_status_and_message(server):
    """A user error raised in the recommender service reaches the client of the public API as the same zest
    error (service/errors.py): its status and its message, at once, and nothing logged as a server error."""
    log_start = len(server.log(10**9))
    requests.post(f"{server.url}/items", json={"items": ITEMS}, timeout=60)
    r = requests.post(f"{server.url}/recommend", json={"history": ["m1"], "k": 1001}, timeout=60)
    assert (r.status_code, r.json()) == (413, {"error": str(too_large("k=1001", 1000))})
    r = requests.get(f"{server.url}/items/ghost", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "unknown item id 'ghost'"})
    r = requests.delete(f"{server.url}/items/ghost", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "unknown item id 'ghost'"})
    log = server.log(10**9)[log_start:]
    assert "Traceback" not in log and "[ERROR]" not in log and "retrying" not in log, log[-3000:]


def _metric(server, name: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.MULTILINE))


def _classify_labels(server, labels: list[str]) -> None:
    r = requests.post(f"{server.url}/classify", files=[("images", ("a.png", _noise_png(64), "image/png"))],
                      data={"labels": ",".join(labels), "templates": "imagenet-simple"}, timeout=120)
    assert r.status_code == 200, r.text


def test_items_and_class_cache_survive_a_restart(tiny_checkpoint, rec_model_dir, tmp_path):
    (tmp_path / "home1").mkdir(), (tmp_path / "home2").mkdir()
    labels = ["cat", "dog", "car", "tree", "boat"]
    with start(tiny_checkpoint, rec_model_dir, tmp_path / "home1", tmp_path / "data") as srv:
        assert requests.post(f"{srv.url}/items", json={"items": ITEMS}, timeout=60).status_code == 200
        bad = requests.post(f"{srv.url}/items", json={"items": [{"id": "m9", "text": "ok"}, {"id": "", "text": "x"}]},
                            timeout=60)
        assert bad.status_code == 400  # a failed request stores nothing
        before = requests.post(f"{srv.url}/recommend", json={"history": ["m3"], "k": 3}, timeout=60).json()
        _classify_labels(srv, labels)
        assert _metric(srv, "zest_class_cache_misses_total") == len(labels)
    with start(tiny_checkpoint, rec_model_dir, tmp_path / "home2", tmp_path / "data") as srv:
        assert requests.get(f"{srv.url}/items/m1", timeout=10).json()["text"] == ITEMS[0]["text"]
        assert requests.get(f"{srv.url}/items/m9", timeout=10).status_code == 404
        after = requests.post(f"{srv.url}/recommend", json={"history": ["m3"], "k": 3}, timeout=60).json()
        assert after == before
        # the class cache came back from disk: the same labels encode nothing, one new label encodes one
        _classify_labels(srv, labels[::-1])
        assert (_metric(srv, "zest_class_cache_hits_total"), _metric(srv, "zest_class_cache_misses_total")) == (5, 0)
        _classify_labels(srv, labels + ["bicycle"])
        assert _metric(srv, "zest_class_cache_misses_total") == 1
        assert _metric(srv, "zest_class_cache_entries") == len(labels) + 1


def test_a_catalogue_of_another_item_model_is_re_embedded_at_start(tiny_checkpoint, rec_model_dir, tmp_path):
    """A catalogue stored by another item model is re-embedded from its texts while the recommender starts, before it
    can call the encoder service (MiniLM runs in the recommender then, once: service/item_texts.py); the items rank
    as if posted to this model."""
    from zest.models.rec.zesrec import load
    from zest.service.catalog import ItemCatalog
    from zest.service.recommender import open_store_for
    from zest.service.settings import Settings

    model = load(rec_model_dir)
    store = open_store_for(Settings(data_dir=str(tmp_path / "data")), "catalog")
    old = ItemCatalog(store, lambda texts: np.zeros((len(texts), model.dim), np.float32), fingerprint="another-model",
                      dim=model.dim)
    old.upsert([(i["id"], i["text"]) for i in ITEMS])
    old.close()
    with start(tiny_checkpoint, rec_model_dir, tmp_path, tmp_path / "data") as srv:
        r = requests.post(f"{srv.url}/recommend", json={"history": ["m1"], "candidates": ["m2", "m3"], "k": 2},
                          timeout=120)
        assert r.status_code == 200, r.text
        assert "re-embedding the catalogue at start" in srv.log(10**9)
    rows = model.embed_items([i["text"] for i in ITEMS])
    scores = rows[1:] @ model.user_vector(rows[:1])
    served = {i["id"]: i["score"] for i in r.json()["items"]}
    np.testing.assert_allclose([served["m2"], served["m3"]], scores, rtol=1e-6, atol=1e-6)
