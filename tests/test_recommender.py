"""Recommender request logic, in-process, on a small untrained ZESRec net and the real MiniLM."""

import pytest
from pydantic import ValidationError

from zest.models.errors import InvalidInput, NotFound, PayloadTooLarge
from zest.models.limits import MAX_ID_CHARS
from zest.service.recommender import build_recommender
from zest.service.schemas import ItemsRequest, RecommendRequest
from zest.service.settings import Settings


def items(*dicts: dict) -> list:
    """Items as the service hands them to the recommender: validated by the request schema."""
    return ItemsRequest.model_validate({"items": list(dicts)}).items


def store_spec(kind: str, tmp_path) -> str:
    return "embedded" if kind == "embedded" else f"milvus-lite:{tmp_path / 'milvus'}"


@pytest.fixture(params=["embedded", "milvus-lite"])
def rec(rec_model_dir, tmp_path, request):
    settings = Settings(data_dir=str(tmp_path), max_rec_items=5, max_k=20, max_history=4,
                        vector_store=store_spec(request.param, tmp_path))
    r = build_recommender(rec_model_dir, "test-model", settings)
    yield r
    r.catalog.close()


@pytest.fixture()
def rec_embedded(rec_model_dir, tmp_path):
    """Request validation does not depend on the backend: one is enough."""
    settings = Settings(data_dir=str(tmp_path), max_rec_items=5, max_k=20, max_history=4)
    return build_recommender(rec_model_dir, "test-model", settings)


ITEM_DICTS = [{"id": f"m{i}", "text": t} for i, t in enumerate(
    ["A space opera with starships", "A romantic comedy in Paris", "A documentary about whales",
     "A horror film in a haunted house", "An animated film about toys"])]
ITEMS = items(*ITEM_DICTS)


def test_upsert_then_recommend_immediately(rec):
    assert rec.upsert(ITEMS) == {"created": 5, "updated": 0, "total": 5}
    out = rec.recommend(history=["m0"], k=3)
    ids = [i["id"] for i in out["items"]]
    assert len(ids) == 3 and "m0" not in ids and out["model"] == "test-model"
    scores = [i["score"] for i in out["items"]]
    assert scores == sorted(scores, reverse=True)
    rec.upsert(items({"id": "new", "text": "A brand new sci-fi space adventure"}))  # no retraining needed
    assert "new" in [i["id"] for i in rec.recommend(history=["m0"], k=10)["items"]]


def test_scores_are_model_dot_products(rec):
    rec.upsert(ITEMS)
    out = rec.recommend(history=["m0", "m2"], k=5, exclude_history=False)
    model = rec.model
    user = model.user_vector(model.embed_items([ITEMS[0].text, ITEMS[2].text]))
    expected = model.embed_items([it.text for it in ITEMS]) @ user
    got = {i["id"]: i["score"] for i in out["items"]}
    for n, item in enumerate(ITEMS):
        assert got[item.id] == pytest.approx(float(expected[n]), abs=1e-4)


def test_candidates_and_free_text_history(rec):
    rec.upsert(ITEMS)
    out = rec.recommend(history_texts=["I loved a film about outer space"], k=10, candidates=["m1", "m3"])
    assert sorted(i["id"] for i in out["items"]) == ["m1", "m3"]
    out = rec.recommend(history=["m1"], candidates=["m1", "m3"], k=5)
    assert [i["id"] for i in out["items"]] == ["m3"]


def test_update_and_delete(rec):
    rec.upsert(ITEMS)
    assert rec.upsert(items({"id": "m0", "text": "Changed text"}))["updated"] == 1
    assert rec.get("m0")["text"] == "Changed text"
    rec.delete("m0")
    with pytest.raises(NotFound):
        rec.get("m0")
    with pytest.raises(NotFound):
        rec.delete("m0")
    assert "m0" not in [i["id"] for i in rec.recommend(history=["m1"], k=10)["items"]]


@pytest.mark.parametrize("kwargs, error", [
    (dict(history=["nope"]), NotFound),
    (dict(history=[]), InvalidInput),
    (dict(), InvalidInput),
    (dict(history=["m0"], k=21), PayloadTooLarge),
    (dict(history=["m0"] * 5), PayloadTooLarge),
    (dict(history=["m0"], candidates=["m1", "ghost"]), NotFound),
    (dict(history=["m0"], candidates=["m1", "m1"]), InvalidInput),
])
def test_bad_recommend_requests(rec_embedded, kwargs, error):
    rec = rec_embedded
    rec.upsert(ITEMS)
    with pytest.raises(error):
        rec.recommend(**kwargs)


@pytest.mark.parametrize("body", [
    {"history": ["m0"], "k": 0}, {"history": ["m0"], "candidates": []}, {"history_texts": ["  "]},
    {"history": [""]}, {"history": ["x" * (MAX_ID_CHARS + 1)]}, {"history": "m0"},
])
def test_recommend_requests_the_schema_refuses(body):
    """What the request schema refuses never reaches the recommender (the service validates it: a 400)."""
    with pytest.raises(ValidationError):
        RecommendRequest.model_validate(body)
    assert RecommendRequest.model_validate({"history": ["x" * MAX_ID_CHARS]}).history  # the limit itself is fine


@pytest.mark.parametrize("body", [
    [], "x", [{"id": "a"}], [{"id": "", "text": "x"}], [{"id": "x" * (MAX_ID_CHARS + 1), "text": "x"}],
    [{"id": "a", "text": "  "}], [{"id": "a", "text": "x", "extra": 1}],
])
def test_upserts_the_schema_refuses(body):
    with pytest.raises(ValidationError):
        ItemsRequest.model_validate({"items": body})


@pytest.mark.parametrize("new, error", [
    ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], InvalidInput),
    ([{"id": f"i{n}", "text": "x"} for n in range(6)], PayloadTooLarge),
])
def test_bad_upserts_change_nothing(rec_embedded, new, error):
    rec = rec_embedded
    rec.upsert(ITEMS[:2])
    with pytest.raises(error):
        rec.upsert(items(*new))
    assert len(rec.catalog) == 2


@pytest.mark.parametrize("kind", ["embedded", "milvus-lite"])
def test_catalogue_survives_restart(rec_model_dir, tmp_path, kind):
    settings = Settings(data_dir=str(tmp_path), vector_store=store_spec(kind, tmp_path))
    first = build_recommender(rec_model_dir, "m", settings)
    first.upsert(ITEMS)
    before = first.recommend(history=["m4"], k=5)
    first.catalog.close()
    second = build_recommender(rec_model_dir, "m", settings)
    assert second.get("m3")["text"] == ITEMS[3].text
    assert second.recommend(history=["m4"], k=5) == before


def test_empty_catalogue_recommends_nothing(rec):
    assert rec.recommend(history_texts=["anything"], k=3)["items"] == []


def test_has_model_is_the_configured_one_or_the_shipped_one(monkeypatch, tmp_path):
    from zest.service import recommender

    assert recommender.has_model(Settings(rec_model="zesrec:latest"))
    monkeypatch.setattr(recommender, "shipped_model_dir", lambda: tmp_path)  # a source tree without the weights
    assert not recommender.has_model(Settings())
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert recommender.has_model(Settings())
