"""The request logic of the CLIP endpoints, in-process (no server)."""

import numpy as np
import pytest

from tests.aio import Sync, local
from tests.images import decode, png
from zest.models.classifier import ZeroShotClassifier
from zest.models.errors import InvalidInput, NotFound, PayloadTooLarge
from zest.prompts import load_template_set
from zest.service.pipeline import ClipPipeline, EncoderInfo, RawImage
from zest.service.settings import Settings


@pytest.fixture()
def pipeline(tiny_encoder, tmp_path):
    settings = Settings(max_images=3, max_labels=5, max_texts=2, max_text_chars=100, data_dir=str(tmp_path))
    return Sync(ClipPipeline(settings, EncoderInfo.of(tiny_encoder), local(tiny_encoder.encode_pixels),
                             local(tiny_encoder.encode_texts)))


def test_classify_equals_direct_classifier(pipeline, tiny_encoder):
    labels = ["cat", "dog", "car"]
    raw = [RawImage("r", png("red", (40, 30))), RawImage("b", png("blue", (40, 30)))]
    out = pipeline.classify(raw, labels, "imagenet", top_k=3)
    images = [decode(r.data) for r in raw]
    direct = Sync(ZeroShotClassifier.from_encoder(tiny_encoder)).predict(
        tiny_encoder.encode_images(images), labels, load_template_set("imagenet"), k=3)
    for res, expected in zip(out.results, direct):
        assert [(p.label, pytest.approx(p.probability, abs=1e-6)) for p in res.predictions] == \
            [(l, pytest.approx(p, abs=1e-6)) for l, p in expected]
    assert out.templates.name == "imagenet" and out.templates.count == 80


def test_default_template_set(pipeline):
    out = pipeline.classify([RawImage("r", png("red", (40, 30)))], ["a", "b"], None, top_k=1)
    assert out.templates.name == "imagenet-simple"


@pytest.mark.parametrize("kwargs, error", [
    ({"labels": ["a"] * 2}, InvalidInput),
    ({"labels": [f"l{i}" for i in range(6)]}, PayloadTooLarge),
    ({"templates": "missing"}, NotFound),
    ({"templates": ["{}{}"]}, InvalidInput),
    ({"top_k": 0}, InvalidInput),
    ({"top_k": True}, InvalidInput),
    ({"raw": []}, InvalidInput),
    ({"raw": [RawImage("x", png("red", (40, 30)))] * 4}, PayloadTooLarge),
    ({"raw": [RawImage("x", b"junk")]}, InvalidInput),
    ({"raw": [RawImage("x", url="http://example.com/a.png")]}, InvalidInput),
])
def test_bad_classify_inputs(pipeline, kwargs, error):
    args = {"raw": [RawImage("r", png("red", (40, 30)))], "labels": ["a", "b"], "templates": None, "top_k": 1} | kwargs
    with pytest.raises(error):
        pipeline.classify(args["raw"], args["labels"], args["templates"], args["top_k"])


def test_embed_texts_limits(pipeline):
    out = pipeline.embed_texts(["hello", "x" * 99])
    assert out.dim == 32 and len(out.embeddings) == 2
    with pytest.raises(PayloadTooLarge):
        pipeline.embed_texts(["a", "b", "c"])
    with pytest.raises(PayloadTooLarge):
        pipeline.embed_texts(["x" * 101])
    with pytest.raises(InvalidInput):
        pipeline.embed_texts([])
    with pytest.raises(InvalidInput):
        pipeline.embed_texts([3])


def test_pipeline_preprocessing_matches_encoder(pipeline, tiny_encoder):
    img = decode(png("purple", (40, 30)))
    np.testing.assert_array_equal(pipeline.pixels([img]), tiny_encoder.preprocess([img]).numpy())


def test_classify_sends_pixels_and_new_label_texts_together(tiny_encoder, tmp_path, monkeypatch):
    """/classify with labels the cache lacks: encode_pixels and encode_texts (those labels' prompts) are in
    flight at the same time, each awaited on the event loop's own thread (no worker thread re-enters it);
    bad input still fails before any encoder call."""
    import asyncio
    import threading

    import anyio.from_thread

    from zest.service.transport import Dependency

    assert not hasattr(Dependency, "sync")
    monkeypatch.setattr(anyio.from_thread, "run", lambda *a, **k: pytest.fail("a worker thread re-entered the loop"))
    calls = []  # (what, event, texts)
    loop_thread = []

    def recorded(what, encode):
        async def call(arg):
            assert threading.get_ident() == loop_thread[0]
            calls.append((what, "start", arg if what == "texts" else None))
            await asyncio.sleep(0.1)
            calls.append((what, "end", None))
            return encode(arg)
        return call

    settings = Settings(data_dir=str(tmp_path))
    pipeline = ClipPipeline(settings, EncoderInfo.of(tiny_encoder), recorded("pixels", tiny_encoder.encode_pixels),
                            recorded("texts", tiny_encoder.encode_texts))
    raw = [RawImage("r", png("red", (40, 30)))]
    templates = load_template_set("photo")

    async def main():
        loop_thread.append(threading.get_ident())
        await pipeline.classify(raw, ["cat"], "photo")  # opens the class cache (its probe), caches "cat"
        with pytest.raises(InvalidInput):
            await pipeline.classify([RawImage("x", b"junk")], ["dog", "car"], "photo")
        calls.clear()
        return await pipeline.classify(raw, ["cat", "dog", "car"], "photo", top_k=3)

    out = asyncio.run(main())
    assert [(w, e) for w, e, _ in calls][:2] in ([("pixels", "start"), ("texts", "start")],
                                                [("texts", "start"), ("pixels", "start")])  # both before an end
    assert [t for w, e, t in calls if w == "texts" and e == "start"] == \
        [[t.format(label) for label in ("dog", "car") for t in templates.templates]]  # only the new labels
    assert len(calls) == 4 and {p.label for p in out.results[0].predictions} == {"cat", "dog", "car"}


def test_the_pipeline_and_the_schemas_refuse_at_the_same_bounds(pipeline):
    """top_k, threshold and the number of images and texts: models/limits.py's one bound each, which the request
    schemas (the API) and the pipeline (called directly: CLI, tests) both enforce -- refused just past it by
    both, accepted at it by both."""
    from pydantic import ValidationError

    from zest.models.classifier import check_threshold
    from zest.models.limits import MAX_THRESHOLD, MIN_INPUTS, MIN_K, MIN_THRESHOLD
    from zest.service.schemas import ClassifyRequest, EmbedImageRequest, EmbedTextRequest

    raw, images = [RawImage("r", png("red", (40, 30)))], ["x"] * MIN_INPUTS
    ClassifyRequest(images=images, top_k=MIN_K, threshold=MIN_THRESHOLD)
    ClassifyRequest(images=images, threshold=MAX_THRESHOLD)
    assert len(pipeline.classify(raw * MIN_INPUTS, ["a", "b", "c"], None, top_k=MIN_K).results[0].predictions) == MIN_K
    assert check_threshold(MIN_THRESHOLD, "sigmoid") == MIN_THRESHOLD
    assert check_threshold(MAX_THRESHOLD, "sigmoid") == MAX_THRESHOLD
    assert len(pipeline.embed_texts(["a"] * MIN_INPUTS).embeddings) == MIN_INPUTS
    assert len(pipeline.load_images(raw * MIN_INPUTS)) == MIN_INPUTS
    for body in ({"images": images, "top_k": MIN_K - 1}, {"images": images, "threshold": MIN_THRESHOLD - 0.01},
                 {"images": images, "threshold": MAX_THRESHOLD + 0.01}, {"images": images[1:]}):
        with pytest.raises(ValidationError):
            ClassifyRequest(**body)
    with pytest.raises(ValidationError):
        EmbedImageRequest(images=["x"] * (MIN_INPUTS - 1))
    with pytest.raises(ValidationError):
        EmbedTextRequest(texts=["a"] * (MIN_INPUTS - 1))
    with pytest.raises(InvalidInput, match=f"top_k must be an integer >= {MIN_K}"):
        pipeline.classify(raw * MIN_INPUTS, ["a", "b", "c"], None, top_k=MIN_K - 1)
    for threshold in (MIN_THRESHOLD - 0.01, MAX_THRESHOLD + 0.01):
        with pytest.raises(InvalidInput, match=f"between {MIN_THRESHOLD} and {MAX_THRESHOLD}"):
            check_threshold(threshold, "sigmoid")
    with pytest.raises(InvalidInput, match=f"texts: send at least {MIN_INPUTS}"):
        pipeline.embed_texts(["a"] * (MIN_INPUTS - 1))
    with pytest.raises(InvalidInput, match=f"images: send at least {MIN_INPUTS}"):
        pipeline.embed_images(raw * (MIN_INPUTS - 1))
