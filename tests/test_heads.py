"""Adapted heads (models/heads.py): the format, its checks, and how the pipeline serves one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.aio import Sync, local
from tests.images import decode, png
from zest.models.errors import Conflict, InvalidInput, ModelLoadError, NotFound
from zest.models.heads import Head, Heads, head_logits, is_head_path, load_head, load_heads, save_head
from zest.service.pipeline import ClipPipeline, EncoderInfo, RawImage
from zest.service.settings import Settings


def _unit(rows):
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _head(**kw) -> Head:
    args = {"name": "shapes", "classes": ("red", "blue"), "model_id": "m1", "weight": _unit([[1, 0], [0, 1]]),
                "bias": np.zeros(2), "logit_scale": 10.0}
    return Head(**(args | kw))


def test_linear_logits_by_hand():
    head = _head(bias=np.array([0.5, -0.5]))
    f = _unit([[3, 4]])  # (0.6, 0.8)
    assert head.logits(f) == pytest.approx(np.array([[10 * 0.6 + 0.5, 10 * 0.8 - 0.5]]))
    p = head.probabilities(f)[0]
    assert p.sum() == pytest.approx(1) and p[1] > p[0]


def test_cache_term_by_hand():
    keys = _unit([[1, 0], [0.6, 0.8]])
    head = _head(cache_keys=keys, cache_labels=np.array([1, 1]), alpha=2.0, beta=3.0)
    f = _unit([[1, 0]])
    # key 0 matches exactly (affinity e^0 = 1), key 1 has cosine 0.6 (affinity e^{-3 * 0.4}); both vote "blue"
    expected_blue = 10 * 0.0 + 2.0 * (1.0 + np.exp(-3 * 0.4))
    assert head.logits(f) == pytest.approx(np.array([[10.0, expected_blue]]), rel=1e-6)
    # alpha 0 is the linear head exactly
    assert head_logits(f, head.weight, head.bias, 10.0, keys, np.array([1, 1]), 0.0, 3.0) == \
        pytest.approx(_head().logits(f))


def test_predict_top_k_order():
    preds = _head().predict(_unit([[0.2, 1.0]]), k=5)
    assert [label for label, _ in preds[0]] == ["blue", "red"]


@pytest.mark.parametrize("kw", [
    {"name": "Bad Name"}, {"name": ""}, {"classes": ("a", "a")}, {"classes": ()},
    {"weight": np.zeros((3, 2))}, {"bias": np.zeros(3)}, {"model_id": ""},
    {"cache_keys": np.zeros((1, 2))}, {"cache_keys": np.zeros((1, 3)), "cache_labels": np.array([0])},
    {"cache_keys": np.zeros((1, 2)), "cache_labels": np.array([2])}, {"weight": np.full((2, 2), np.nan)},
])
def test_invalid_heads_are_refused(kw):
    with pytest.raises(ValueError):
        _head(**kw)


def test_save_load_round_trip(tmp_path):
    head = _head(cache_keys=_unit([[1, 2], [2, 1]]), cache_labels=np.array([0, 1]), alpha=5.0, beta=1.5,
                 meta={"method": "tip-adapter", "metrics": {"adapted_top1": 0.9}, "train_images": ["ab"]})
    loaded = load_head(save_head(head, tmp_path / "h"), source="shapes:v1")
    assert loaded.classes == head.classes and loaded.model_id == "m1" and loaded.source == "shapes:v1"
    assert (loaded.alpha, loaded.beta, loaded.logit_scale) == (5.0, 1.5, 10.0)
    np.testing.assert_array_equal(loaded.cache_keys, head.cache_keys)
    f = _unit([[1, 1], [1, -1]])
    np.testing.assert_allclose(loaded.logits(f), head.logits(f))
    summary = loaded.summary()
    assert summary["metrics"] == {"adapted_top1": 0.9} and summary["cache_size"] == 2
    assert "train_images" not in json.dumps(summary)


def test_load_errors_name_the_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="head.json is missing"):
        load_head(tmp_path)
    directory = save_head(_head(), tmp_path / "h")
    meta = json.loads((directory / "head.json").read_text())
    (directory / "head.json").write_text(json.dumps(meta | {"format": "other/9"}))
    with pytest.raises(ModelLoadError, match="not a valid zest head.*other/9"):
        load_head(directory)


def test_registry_lookup_and_model_check(tmp_path):
    heads = load_heads([(save_head(_head(), tmp_path / "a"), "shapes:1"),
                        (save_head(_head(name="other", model_id="m2"), tmp_path / "b"), "other:1")])
    assert heads.names == ["shapes", "other"]
    assert heads.for_model("shapes", "m1", 2).name == "shapes"
    with pytest.raises(NotFound, match="no head named 'nope'.*shapes, other") as e:
        heads.get("nope")
    assert e.value.status_code == 404
    with pytest.raises(Conflict, match="made for model 'm2'.*runs model 'm1'") as e:
        heads.for_model("other", "m1")
    assert e.value.status_code == 409
    with pytest.raises(ModelLoadError, match="two heads are named 'shapes'"):
        Heads([_head(), _head()])


def test_a_bare_name_is_a_store_tag_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()  # e.g. the image folder the head was adapted on
    assert not is_head_path("shapes") and not is_head_path("shapes:v1")
    assert is_head_path("./shapes") and is_head_path(str(tmp_path / "shapes"))
    save_head(_head(), tmp_path / "myhead")
    assert is_head_path("myhead")


# ---------------------------------------------------------------------------------------- the pipeline


@pytest.fixture()
def pipeline_with_heads(tiny_encoder):
    info = EncoderInfo.of(tiny_encoder)
    rng = np.random.default_rng(0)
    good = Head(name="good", classes=("x", "y", "z"), model_id=info.model_id,
                weight=_unit(rng.normal(size=(3, info.dim))), bias=np.zeros(3), logit_scale=info.logit_scale)
    foreign = Head(name="foreign", classes=("x", "y"), model_id="zest-tiny", weight=_unit(rng.normal(size=(2, 256))),
                   bias=np.zeros(2), logit_scale=30.0)
    encoded_texts = []

    def encode_texts(texts):
        encoded_texts.extend(texts)
        return tiny_encoder.encode_texts(texts)

    pipeline = Sync(ClipPipeline(Settings(max_images=3), info, local(tiny_encoder.encode_pixels), local(encode_texts),
                                 heads=Heads([good, foreign])))
    return pipeline, good, encoded_texts


def test_classify_with_head_uses_its_classes_and_no_text(pipeline_with_heads, tiny_encoder):
    pipeline, good, encoded_texts = pipeline_with_heads
    raw = [RawImage("r", png("red", (40, 30))), RawImage("b", png("blue", (40, 30)))]
    out = pipeline.classify(raw, None, None, top_k=2, head="good")
    assert out.head == "good" and out.templates is None and not encoded_texts
    feats = tiny_encoder.encode_images([decode(r.data) for r in raw])
    for res, expected in zip(out.results, good.predict(feats, k=2)):
        assert [(p.label, pytest.approx(p.probability, abs=1e-5)) for p in res.predictions] == \
            [(l, pytest.approx(p, abs=1e-5)) for l, p in expected]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"head": "nope"}, NotFound, "no head named 'nope'"),
    ({"head": "foreign"}, Conflict, "made for model 'zest-tiny'"),
    ({"head": "good", "labels": ["a"]}, InvalidInput, "leave out labels and templates"),
    ({"head": "good", "templates": "photo"}, InvalidInput, "leave out labels and templates"),
    ({"head": None, "labels": None}, InvalidInput, "labels is missing"),
])
def test_bad_head_requests(pipeline_with_heads, kwargs, error, message):
    pipeline = pipeline_with_heads[0]
    args = {"raw": [RawImage("r", png("red", (40, 30)))], "labels": None, "templates": None, "top_k": 1} | kwargs
    with pytest.raises(error, match=message):
        pipeline.classify(**args)


def test_list_heads_marks_the_foreign_head(pipeline_with_heads):
    listed = pipeline_with_heads[0].list_heads()
    assert {h.name: h.usable for h in listed.heads} == {"good": True, "foreign": False}
    assert listed.model == pipeline_with_heads[1].model_id


def test_zest_heads_setting(monkeypatch):
    monkeypatch.setenv("ZEST_HEADS", " shapes, /srv/heads/Fruit ,shapes,")
    assert Settings.from_env().heads == ("shapes", "/srv/heads/Fruit")  # order kept, duplicates dropped
    monkeypatch.delenv("ZEST_HEADS")
    assert Settings.from_env().heads == ()
