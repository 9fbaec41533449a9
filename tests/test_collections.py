"""Collections (service/collections.py) in process: zest-tiny on generated scenes, over the embedded store
and over Milvus (milvus-lite). Search quality: text queries find their scenes, image queries their
near-duplicates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.aio import Sync, local
from tests.images import encode
from zest.models.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from zest.service.collections import Collections, NewItem
from zest.service.pipeline import ClipPipeline, EncoderInfo, RawImage
from zest.service.settings import Settings
from zest.store.embedded import EmbeddedStore
from zest.store.milvus import MilvusStore
from zest.training.embedded import scenes as S

PER_COMBO = 3


@pytest.fixture(scope="module")
def encoder():
    from zest.models.clip_encoder import ClipEncoder

    return ClipEncoder.from_spec("zest-tiny", device="cpu", precision="fp32", batch_size=64)


@pytest.fixture(scope="module")
def scenes():
    """PER_COMBO distinct scenes of each of the 42 colour x shape combinations (never seen in training)."""
    return S.make_scenes(seed=11, n=PER_COMBO * len(S.ALL_COMBOS), split="all", stream=S.STREAM_EVAL_SEEN)


@pytest.fixture(scope="module")
def memo_encoder(encoder):
    """The encoder's two calls, memoised: both backends index the same images without encoding them twice."""
    cache: dict = {}

    def pixels(p):
        key = ("p", p.tobytes())
        if key not in cache:
            cache[key] = encoder.encode_pixels(p)
        return cache[key]

    def texts(t):
        key = ("t", tuple(t))
        if key not in cache:
            cache[key] = encoder.encode_texts(t)
        return cache[key]

    return local(pixels), local(texts)


def make_collections(kind, tmp_path, encoder, memo, **limits) -> Collections:
    settings = Settings(max_images=16, max_texts=8, max_metadata_bytes=200, max_collection_k=50, **limits)
    store = (EmbeddedStore(tmp_path / "c.sqlite3") if kind == "embedded"
             else MilvusStore(str(tmp_path / "c.db"), index_type="FLAT", shared=False))
    return Sync(Collections(store, ClipPipeline(settings, EncoderInfo.of(encoder), *memo), settings))


@pytest.fixture(scope="module", params=["embedded", "milvus-lite"])
def indexed(request, tmp_path_factory, encoder, memo_encoder, scenes):
    coll = make_collections(request.param, tmp_path_factory.mktemp(request.param), encoder, memo_encoder)
    coll.create("shapes")
    items = [NewItem(id=f"scene-{n}", image=RawImage(name=f"{n}.png", data=encode(sc.image)),
                     metadata={"colour": sc.spec.colour, "shape": sc.spec.shape})
             for n, sc in enumerate(scenes)]
    for a in range(0, len(items), 16):
        coll.add("shapes", items[a:a + 16])
    yield coll
    coll.store.close()


def test_text_query_returns_the_matching_scenes_first(indexed, scenes):
    precisions = []
    for colour, shape in S.ALL_COMBOS:
        out = indexed.search("shapes", text=f"a photo of a {colour} {shape}", k=5)
        top = [(r["metadata"]["colour"], r["metadata"]["shape"]) for r in out["results"]]
        assert len(top) == 5
        precisions.append(sum(c == (colour, shape) for c in top[:PER_COMBO]) / PER_COMBO)
    assert np.mean(precisions) >= 0.9, precisions  # precision@3 (3 relevant scenes per query), 42 queries
    # precision@5 where 5 scenes are relevant: every red scene for "red" among 7 shapes x 3
    out = indexed.search("shapes", text="a red shape", k=5, filter={"shape": ["circle", "square"]})
    assert all(r["metadata"]["shape"] in ("circle", "square") for r in out["results"])
    p5 = np.mean([r["metadata"]["colour"] == "red" for r in out["results"]])
    assert p5 >= 0.8, out


def test_image_query_returns_near_duplicates_first(indexed, scenes):
    for n in range(0, len(scenes), 13):
        img = scenes[n].image
        w, h = img.size
        variant = img.crop((2, 2, w - 2, h - 2)).resize((w + 7, h + 7))  # cropped, rescaled, re-encoded
        out = indexed.search("shapes", image=RawImage(name="q.jpg", data=encode(variant, "JPEG", quality=70)), k=3)
        assert out["results"][0]["id"] == f"scene-{n}", (n, out["results"])
        assert out["results"][0]["score"] > 0.9


def test_search_by_vector_and_metadata(indexed, encoder):
    vec = encoder.encode_texts(["a blue star"])[0].tolist()
    out = indexed.search("shapes", vector=vec, k=3, filter={"colour": "blue"})
    assert [r["metadata"]["colour"] for r in out["results"]] == ["blue"] * 3
    item = indexed.get_item("shapes", out["results"][0]["id"])
    assert item["kind"] == "image" and item["metadata"]["colour"] == "blue"
    assert {"name": "shapes", "model": "zest-tiny", "dim": encoder.dim}.items() <= indexed.describe("shapes").items()


def test_texts_lifecycle_and_bad_input(tmp_path, encoder, memo_encoder):
    c = make_collections("embedded", tmp_path, encoder, memo_encoder)
    c.create("notes")
    with pytest.raises(Conflict):
        c.create("notes")
    with pytest.raises(Conflict):
        c.create("other", model="ViT-B-32")
    c.add("notes", [NewItem(id="a", text="a green heart", metadata={"lang": "en"}), NewItem(id="b", text="a red star")])
    assert c.search("notes", text="green heart", k=1)["results"][0]["id"] == "a"
    assert c.get_item("notes", "a") == {"id": "a", "kind": "text", "text": "a green heart", "metadata": {"lang": "en"}}
    bad = [
        ([NewItem(id="c", text="x", image=RawImage("i", b"x"))], InvalidInput),
        ([NewItem(id="c")], InvalidInput),
        ([NewItem(id="", text="x")], InvalidInput),
        ([NewItem(id="c", text="x"), NewItem(id="c", text="y")], InvalidInput),
        ([NewItem(id="c", text="x", metadata={"k": "v" * 300})], PayloadTooLarge),
        ([NewItem(id="c", text="x", metadata=[1])], InvalidInput),
        ([NewItem(id=f"t{i}", text="x") for i in range(9)], PayloadTooLarge),
        ([NewItem(id="c", text="ok"), NewItem(id="d", image=RawImage("bad.png", b"not an image"))], InvalidInput),
        ([], InvalidInput),
    ]
    for items, error in bad:
        with pytest.raises(error):
            c.add("notes", items)
    assert c.describe("notes")["count"] == 2  # nothing of the failed writes was stored
    for kwargs, error in [({}, InvalidInput), ({"text": "x", "vector": [0.0]}, InvalidInput),
                          ({"text": "x", "k": 0}, InvalidInput), ({"text": "x", "k": 51}, PayloadTooLarge),
                          ({"vector": [1.0, 2.0]}, InvalidInput), ({"text": "x", "filter": {"a-b": 1}}, InvalidInput)]:
        with pytest.raises(error):
            c.search("notes", **kwargs)
    with pytest.raises(NotFound):
        c.search("ghost", text="x")
    with pytest.raises(InvalidInput):
        c.create("bad-name")
    assert c.delete_item("notes", "a") == {"deleted": "a", "count": 1}
    with pytest.raises(NotFound):
        c.get_item("notes", "a")
    assert [r["id"] for r in c.search("notes", text="green heart", k=5)["results"]] == ["b"]  # deleted at once
    c.store.create_collection("c_foreign", 64, "cosine", {"model": "ViT-B-32"})
    with pytest.raises(Conflict):  # embeddings of another model are never mixed with ours
        c.add("foreign", [NewItem(id="x", text="x")])
    assert [x["name"] for x in c.list()["collections"]] == ["foreign", "notes"]
    assert c.drop("notes") == {"deleted": "notes"}
    with pytest.raises(NotFound):
        c.drop("notes")


def test_failed_encoder_stores_nothing(tmp_path, encoder):
    def broken(_):
        raise RuntimeError("encoder down")

    settings = Settings()
    c = Sync(Collections(EmbeddedStore(tmp_path / "c.sqlite3"),
                         ClipPipeline(settings, EncoderInfo.of(encoder), local(broken), local(broken)), settings))
    c.create("x")
    with pytest.raises(RuntimeError):
        c.add("x", [NewItem(id="a", text="hello")])
    assert c.describe("x")["count"] == 0


@pytest.mark.parametrize("kind", ["embedded", "milvus-lite"])
def test_thumbnails_are_kept_with_the_item_and_survive_a_reopen(kind, tmp_path, encoder, memo_encoder, scenes):
    c = make_collections(kind, tmp_path, encoder, memo_encoder)
    assert c.create("pics", thumbnails=True)["thumbnails"] is True
    c.create("plain")
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (900, 1400, 3), dtype=np.uint8))  # JPEG's worst case, 1400 px
    big = encode(noisy)
    assert len(big) > 16 * 1024
    items = [NewItem(id="noisy", image=RawImage("noisy.png", big), metadata={"colour": "none"})]
    items += [NewItem(id=f"scene-{n}", image=RawImage(f"{n}.png", encode(scenes[n].image)),
                      metadata={"colour": scenes[n].spec.colour, "shape": scenes[n].spec.shape}) for n in range(3)]
    items.append(NewItem(id="note", text="a red star"))
    c.add("pics", items)
    c.add("plain", [NewItem(id="scene-0", image=RawImage("0.png", encode(scenes[0].image)))])
    for item_id in ("noisy", "scene-0"):
        jpeg = c.thumbnail("pics", item_id)
        assert len(jpeg) <= 16 * 1024
        thumb = Image.open(io.BytesIO(jpeg))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
    assert Image.open(io.BytesIO(c.thumbnail("pics", "noisy"))).size == (256, 165)  # aspect kept
    # the thumbnail is a small copy of the item's own image: closer to it than to any other item's
    own = np.asarray(Image.open(io.BytesIO(c.thumbnail("pics", "scene-1"))).resize((64, 64)), np.float32)
    others = [np.asarray(scenes[n].image.convert("RGB").resize((64, 64)), np.float32) for n in range(3)]
    assert int(np.argmin([np.abs(own - o).mean() for o in others])) == 1
    hits = c.search("pics", text="a photo", k=10)["results"]
    assert {h["id"]: h.get("thumbnail", False) for h in hits} == {
        "noisy": True, "scene-0": True, "scene-1": True, "scene-2": True, "note": False}
    assert all("thumbnail" not in h or h["thumbnail"] is True for h in hits)  # never the JPEG in a result
    assert c.get_item("pics", "scene-0")["thumbnail"] is True
    for name, item_id, message in [("pics", "note", "text item"), ("plain", "scene-0", "without thumbnails"),
                                   ("pics", "ghost", "unknown item"), ("ghost", "x", "unknown collection")]:
        with pytest.raises(NotFound, match=message):
            c.thumbnail(name, item_id)
    before = c.thumbnail("pics", "scene-2")
    c.store.close()
    reopened = make_collections(kind, tmp_path, encoder, memo_encoder)  # the same file: a restart
    assert reopened.thumbnail("pics", "scene-2") == before
    assert reopened.describe("pics")["thumbnails"] is True and reopened.describe("plain")["thumbnails"] is False
    reopened.delete_item("pics", "scene-2")
    with pytest.raises(NotFound):
        reopened.thumbnail("pics", "scene-2")
    reopened.store.close()


def test_more_like_this_searches_by_an_items_stored_vector(indexed, scenes):
    out = indexed.search("shapes", like="scene-5", k=PER_COMBO - 1)
    assert "scene-5" not in [r["id"] for r in out["results"]]  # the item itself is left out
    want = (scenes[5].spec.colour, scenes[5].spec.shape)
    assert [(r["metadata"]["colour"], r["metadata"]["shape"]) for r in out["results"]] == [want] * (PER_COMBO - 1)
    with pytest.raises(NotFound, match="unknown item id 'ghost'"):
        indexed.search("shapes", like="ghost")
    with pytest.raises(InvalidInput, match="exactly one"):
        indexed.search("shapes", like="scene-5", text="a red star")


@pytest.mark.parametrize("target", ["embedded", "milvus-lite"])
def test_thumbnails_travel_in_a_store_dump(target, tmp_path, encoder, memo_encoder, scenes):
    """`zest store export` / `import` carry the thumbnail inside the item's payload, to either backend."""
    from zest.service.cli import main as zest_main
    from zest.store import open_store

    settings = Settings(max_images=16)
    src = Sync(Collections(open_store("embedded", "collections", data_dir=str(tmp_path / "src")),
                           ClipPipeline(settings, EncoderInfo.of(encoder), *memo_encoder), settings))
    src.create("pics", thumbnails=True)
    src.add("pics", [NewItem(id=f"s{n}", image=RawImage(f"{n}.png", encode(scenes[n].image))) for n in range(3)])
    want = {f"s{n}": src.thumbnail("pics", f"s{n}") for n in range(3)}
    src.store.close()
    assert zest_main(["store", "export", str(tmp_path / "dump"), "--store", "embedded",
                      "--data-dir", str(tmp_path / "src"), "--quiet"]) == 0
    spec = "embedded" if target == "embedded" else f"milvus-lite:{tmp_path / 'dst.db'}"
    assert zest_main(["store", "import", str(tmp_path / "dump"), "--store", spec,
                      "--data-dir", str(tmp_path / "dst"), "--quiet"]) == 0
    dst = Sync(Collections(open_store(spec, "collections", data_dir=str(tmp_path / "dst")),
                           ClipPipeline(settings, EncoderInfo.of(encoder), *memo_encoder), settings))
    try:
        assert dst.describe("pics")["thumbnails"] is True
        assert {i: dst.thumbnail("pics", i) for i in want} == want
    finally:
        dst.store.close()
