"""End-to-end over the vector store: the real server on loopback.

- two zest servers over one Milvus (milvus-lite's gRPC server on loopback): an item, a collection and an
  image written through one are found through the other at once, and deletes are seen at once; the
  second runs the recommender with two workers;
- one server on the embedded store: collections over HTTP (multipart and JSON), `zest index DIR`,
  a restart that keeps collections and the catalogue.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests

from tests.images import decode, png
from tests.server import milvus_lite_server, running_server
from zest.service.cli import main as zest_main

SIZE = (48, 48)  # the images these tests send


@pytest.fixture(scope="module")
def milvus(tmp_path_factory):
    """milvus-lite as a local gRPC server, bound to loopback (the URI zest gets is milvus://...)."""
    with milvus_lite_server(tmp_path_factory.mktemp("milvus")) as port:
        yield f"milvus://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def two_servers(tiny_checkpoint, rec_model_dir, tmp_path_factory, milvus):
    root = tmp_path_factory.mktemp("replicas")
    with (running_server(tiny_checkpoint, rec_model_dir, root / "a", ZEST_MAX_IMAGES="4",
                         ZEST_VECTOR_STORE=milvus) as a,
          running_server(tiny_checkpoint, rec_model_dir, root / "b", ZEST_MAX_IMAGES="4", ZEST_VECTOR_STORE=milvus,
                         ZEST_REC_WORKERS="2") as b):
        yield a, b


def test_two_servers_share_one_catalogue(two_servers):
    a, b = two_servers
    items = [{"id": "m1", "text": "A space opera with starships"}, {"id": "m2", "text": "A romantic comedy in Paris"},
             {"id": "m3", "text": "A documentary about whales"}]
    assert requests.post(f"{a.url}/items", json={"items": items}, timeout=60).status_code == 200
    assert requests.get(f"{b.url}/items/m2", timeout=30).json()["text"] == items[1]["text"]
    for _ in range(4):  # two recommender workers on b: every one sees a's writes
        r = requests.post(f"{b.url}/recommend", json={"history": ["m1"], "k": 5}, timeout=60)
        assert r.status_code == 200 and sorted(i["id"] for i in r.json()["items"]) == ["m2", "m3"]
    assert requests.delete(f"{b.url}/items/m3", timeout=30).status_code == 200
    assert requests.get(f"{a.url}/items/m3", timeout=30).status_code == 404  # deleted through b, gone on a
    r = requests.post(f"{a.url}/recommend", json={"history": ["m1"], "k": 5}, timeout=60)
    assert [i["id"] for i in r.json()["items"]] == ["m2"]


def test_two_servers_share_collections(two_servers):
    a, b = two_servers
    assert requests.post(f"{a.url}/collections", json={"name": "photos"}, timeout=60).status_code == 200
    assert requests.post(f"{b.url}/collections", json={"name": "photos"}, timeout=60).status_code == 409
    r = requests.post(f"{a.url}/collections/photos/items", timeout=60,
                      files=[("images", ("red.png", png("red", SIZE), "image/png")),
                             ("images", ("blue.png", png("blue", SIZE), "image/png"))],
                      data={"metadata": json.dumps({"source": "a"})})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 2
    r = requests.post(f"{b.url}/collections/photos/search", timeout=60,
                      files=[("images", ("q.png", png("blue", (40, 40)), "image/png"))], data={"k": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == "blue.png" and r.json()["results"][0]["metadata"] == {"source": "a"}
    r = requests.post(f"{b.url}/collections/photos/items", timeout=60,
                      json={"items": [{"id": "note", "text": "a note", "metadata": {"source": "b"}}]})
    assert r.status_code == 200, r.text
    r = requests.post(f"{a.url}/collections/photos/search", json={"text": "a note", "k": 1,
                                                                 "filter": {"source": "b"}}, timeout=60)
    assert [x["id"] for x in r.json()["results"]] == ["note"]
    assert requests.delete(f"{a.url}/collections/photos/items/note", timeout=30).status_code == 200
    assert requests.get(f"{b.url}/collections/photos/items/note", timeout=30).status_code == 404
    assert [c["name"] for c in requests.get(f"{b.url}/collections", timeout=30).json()["collections"]] == ["photos"]


def test_thumbnails_over_http_through_milvus(two_servers):
    """Written through one replica, served by the other: the thumbnail is stored with the item in Milvus."""
    a, b = two_servers
    r = requests.post(f"{a.url}/collections", json={"name": "thumbs", "thumbnails": True}, timeout=60)
    assert r.status_code == 200 and r.json()["thumbnails"] is True, r.text
    r = requests.post(f"{a.url}/collections/thumbs/items", timeout=60,
                      files=[("images", ("red.png", png("red", (600, 300)), "image/png"))],
                      data={"ids": json.dumps(["album/red"])})  # an id with a '/'
    assert r.status_code == 200, r.text
    requests.post(f"{a.url}/collections/thumbs/items", json={"items": [{"id": "t", "text": "a note"}]}, timeout=60)
    r = requests.get(f"{b.url}/collections/thumbs/items/album/red/thumbnail", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = decode(r.content)
    assert thumb.size == (256, 128) and len(r.content) <= 16 * 1024
    assert thumb.convert("RGB").getpixel((128, 64))[0] > 200  # red
    hit = requests.post(f"{b.url}/collections/thumbs/search", json={"text": "red", "k": 2}, timeout=60).json()
    assert {h["id"]: h["thumbnail"] for h in hit["results"]} == {"album/red": True, "t": False}
    assert requests.get(f"{b.url}/collections/thumbs/items/album/red", timeout=30).json()["thumbnail"] is True
    r = requests.get(f"{b.url}/collections/thumbs/items/t/thumbnail", timeout=30)
    assert r.status_code == 404 and "text item" in r.json()["error"]
    r = requests.get(f"{b.url}/collections/thumbs/items/ghost/thumbnail", timeout=30)
    assert r.status_code == 404 and list(r.json()) == ["error"]
    assert requests.delete(f"{a.url}/collections/thumbs", timeout=30).status_code == 200


def test_zest_index_and_bad_input_over_http(two_servers, tmp_path):
    a, b = two_servers
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name, colour in [("red.png", "red"), ("green.png", "green"), ("sub/blue.png", "blue")]:
        (folder / name).write_bytes(png(colour, SIZE))
    (folder / "notes.txt").write_text("not an image")
    assert zest_main(["index", str(folder), "--collection", "pics", "--url", a.url, "--batch", "2", "--quiet"]) == 0
    info = requests.get(f"{b.url}/collections/pics", timeout=30).json()
    assert info["count"] == 3 and info["model"].startswith("local-dir:") and info["dim"] == 32
    item = requests.get(f"{b.url}/collections/pics/items/sub/blue.png", timeout=30)
    assert item.status_code == 200 and item.json()["metadata"] == {"path": "sub/blue.png"}
    body = {"image": base64.b64encode(png("green", (30, 30))).decode(), "k": 3}
    top = requests.post(f"{b.url}/collections/pics/search", json=body, timeout=60).json()["results"]
    assert top[0]["id"] == "green.png" and len(top) == 3
    for path, payload, status in [
        ("/collections", {"name": "bad-name"}, 400),
        ("/collections", {"name": "pics"}, 409),
        ("/collections", {"name": "x", "model": "ViT-L-14"}, 409),
        ("/collections/pics/search", {"k": 3}, 400),
        ("/collections/pics/search", {"text": "x", "k": 0}, 400),
        ("/collections/pics/search", {"vector": [0.1] * 5}, 400),
        ("/collections/pics/search", {"text": "x", "filter": {"a b": 1}}, 400),
        ("/collections/ghost/search", {"text": "x"}, 404),
        ("/collections/pics/items", {"items": [{"id": "x", "image": "%%%"}]}, 400),
        ("/collections/pics/items", {"items": [{"id": f"t{i}", "image": base64.b64encode(png("red", SIZE)).decode()}
                                               for i in range(5)]}, 413),
    ]:
        r = requests.post(f"{a.url}{path}", json=payload, timeout=60)
        assert r.status_code == status, (path, payload, r.text)
        assert "error" in r.json()
    assert requests.get(f"{a.url}/collections/pics", timeout=30).json()["count"] == 3  # failures stored nothing
    assert requests.delete(f"{b.url}/collections/pics", timeout=30).status_code == 200
    assert requests.get(f"{a.url}/collections/pics", timeout=30).status_code == 404


@pytest.mark.slow
def test_embedded_server_restart_keeps_collections_and_catalogue(tiny_checkpoint, rec_model_dir, tmp_path):
    """(In the default run, restarts are shown in process: tests/test_store.py, test_catalog.py, test_recommender.py.)"""
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "h1", ZEST_MAX_IMAGES="4") as srv:
        assert requests.post(f"{srv.url}/collections", json={"name": "pics"}, timeout=60).status_code == 200
        r = requests.post(f"{srv.url}/collections/pics/items", timeout=60,
                          files=[("images", (f"{c}.png", png(c, SIZE), "image/png")) for c in ("red", "green", "blue")])
        assert r.status_code == 200, r.text
        assert requests.delete(f"{srv.url}/collections/pics/items/red.png", timeout=30).status_code == 200
        top = requests.post(f"{srv.url}/collections/pics/search", json={"text": "red", "k": 5}, timeout=60).json()
        assert "red.png" not in [x["id"] for x in top["results"]]  # deleted: gone from the next search
        assert requests.post(f"{srv.url}/items", json={"items": [{"id": "m1", "text": "A film"}]},
                             timeout=60).status_code == 200
    # same data dir: a restart
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path / "h1", ZEST_MAX_IMAGES="4") as srv:
        assert requests.get(f"{srv.url}/collections/pics", timeout=30).json()["count"] == 2
        assert requests.get(f"{srv.url}/collections/pics/items/red.png", timeout=30).status_code == 404
        assert requests.get(f"{srv.url}/items/m1", timeout=30).json()["text"] == "A film"
        body = {"image": base64.b64encode(png("blue", SIZE)).decode(), "k": 1}
        top = requests.post(f"{srv.url}/collections/pics/search", json=body, timeout=60).json()["results"]
        assert top[0]["id"] == "blue.png"
