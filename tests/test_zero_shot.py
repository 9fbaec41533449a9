import asyncio

import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from PIL import Image

from tests.aio import Sync, local
from zest.models.class_cache import ClassEmbeddingCache
from zest.models.classifier import ZeroShotClassifier, clean_labels
from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.models.zero_shot import top_k
from zest.prompts import load_template_set, user_template_set

LABELS = ["cat", "dog", "car", "tree", "boat"]


def _images(n):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_parity_with_open_clip_zero_shot(tiny_checkpoint, tiny_encoder):
    """Class matrix and probabilities equal open_clip's build_zero_shot_classifier + encode_image."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_checkpoint}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_checkpoint}")
    model.eval()
    templates = load_template_set("imagenet")
    ref_classes = build_zero_shot_classifier(model, tokenizer, LABELS, list(templates.templates),
                                             num_classes_per_batch=2)
    imgs = _images(3)
    with torch.no_grad():
        img_feats = model.encode_image(torch.stack([preprocess(i) for i in imgs]), normalize=True)
        ref_probs = (model.logit_scale.exp() * img_feats @ ref_classes).softmax(dim=-1).numpy()

    clf = Sync(ZeroShotClassifier.from_encoder(tiny_encoder))
    classes = clf.class_embeddings(LABELS, templates)
    np.testing.assert_allclose(classes, ref_classes.T.numpy(), atol=1e-5)
    probs = clf.probabilities(tiny_encoder.encode_images(imgs), LABELS, templates)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(classes, axis=1), 1, atol=1e-5)


def _counting(tiny_encoder, calls, pause_s=0.0):
    async def encode(texts):
        calls.append(list(texts))
        await asyncio.sleep(pause_s)
        return tiny_encoder.encode_texts(texts)
    return encode


def test_repeat_request_never_touches_text_tower(tiny_encoder):
    calls = []
    clf = Sync(ZeroShotClassifier(_counting(tiny_encoder, calls), tiny_encoder.model_id, tiny_encoder.logit_scale))
    templates = load_template_set("imagenet-simple")
    feats = tiny_encoder.encode_images(_images(2))
    first = clf.predict(feats, LABELS, templates, k=3)
    assert [len(c) for c in calls] == [1, len(LABELS) * 7]  # the cache's fingerprint probe, then the labels
    second = clf.predict(feats, LABELS, templates, k=3)
    assert len(calls) == 2  # cached
    assert first == second
    clf.predict(feats, LABELS[::-1], templates, k=1)  # the same labels in another order: nothing to encode
    assert len(calls) == 2
    clf.predict(feats, LABELS, user_template_set(["a {}"]), k=1)  # other templates: every label again
    assert calls[-1] == [f"a {label}" for label in LABELS]


def test_a_label_list_sharing_labels_encodes_only_the_new_ones(tiny_encoder):
    calls = []
    clf = Sync(ZeroShotClassifier(_counting(tiny_encoder, calls), tiny_encoder.model_id, tiny_encoder.logit_scale))
    templates = load_template_set("imagenet-simple")
    before = clf.class_embeddings(LABELS, templates)
    after = clf.class_embeddings(LABELS[:3] + ["bicycle"] + LABELS[3:], templates)
    assert calls[-1] == [t.format("bicycle") for t in templates.templates]  # 7 prompts, not 42
    np.testing.assert_allclose(np.delete(after, 3, axis=0), before, atol=1e-6)
    assert clf.cache.hits == len(LABELS) and clf.cache.misses == len(LABELS) + 1


def test_cache_survives_a_restart_and_is_namespaced_by_the_weights(tiny_encoder, tmp_path):
    templates = load_template_set("photo")
    first = Sync(ZeroShotClassifier.from_encoder(tiny_encoder, cache_dir=tmp_path))
    expected = first.class_embeddings(LABELS, templates)
    first.cache.close()

    calls = []
    again = Sync(ZeroShotClassifier(_counting(tiny_encoder, calls), tiny_encoder.model_id, tiny_encoder.logit_scale,
                                    cache_dir=tmp_path))  # a new process would build exactly this
    np.testing.assert_allclose(again.class_embeddings(LABELS, templates), expected, atol=1e-7)
    assert len(calls) == 1  # only the fingerprint probe: every label came from disk

    other_calls = []
    other = Sync(ZeroShotClassifier(local(lambda texts: other_calls.append(texts) or -tiny_encoder.encode_texts(texts)),
                                    tiny_encoder.model_id, tiny_encoder.logit_scale, cache_dir=tmp_path))
    np.testing.assert_allclose(other.class_embeddings(LABELS, templates), -expected, atol=1e-6)
    assert len(other_calls) == 2  # same model id, other weights: a namespace of its own, nothing reused


def test_concurrent_misses_encode_each_label_once(tiny_encoder):
    """Eight requests at once with the same new labels: one probe, each prompt encoded once (the others await
    the request that encodes them), the same embeddings for all."""
    calls = []
    clf = ZeroShotClassifier(_counting(tiny_encoder, calls, pause_s=0.05), tiny_encoder.model_id,
                             tiny_encoder.logit_scale)
    templates = load_template_set("photo")

    async def main():
        return await asyncio.gather(*(clf.class_embeddings(LABELS[n % 3:], templates) for n in range(8)))

    results = asyncio.run(main())
    assert len(calls[0]) == 1  # the cache's fingerprint probe, once
    prompts = [p for c in calls[1:] for p in c]
    assert sorted(prompts) == sorted(t.format(label) for label in LABELS for t in templates.templates)
    for n, r in enumerate(results):
        np.testing.assert_array_equal(r, results[0][n % 3:])


def test_a_cancelled_request_leaves_its_labels_to_the_others(tiny_encoder):
    """The request encoding a label is cancelled (a client gone): the one awaiting it encodes it itself."""
    calls = []
    clf = ZeroShotClassifier(_counting(tiny_encoder, calls, pause_s=0.2), tiny_encoder.model_id,
                             tiny_encoder.logit_scale)
    templates = load_template_set("photo")

    async def main():
        await clf.open_cache()
        first = asyncio.ensure_future(clf.class_embeddings(LABELS, templates))
        await asyncio.sleep(0.05)  # `first` is encoding LABELS
        second = asyncio.ensure_future(clf.class_embeddings(LABELS, templates))
        await asyncio.sleep(0.05)  # `second` awaits `first`
        first.cancel()
        return await second

    got = asyncio.run(main())
    np.testing.assert_allclose(got, Sync(ZeroShotClassifier.from_encoder(tiny_encoder)).class_embeddings(
        LABELS, templates), atol=1e-6)
    assert len(calls) == 3 and calls[1] == calls[2]  # probe, `first` (cancelled), `second` again
    assert not clf._inflight


def test_an_encoder_failure_reaches_every_request_waiting_and_nothing_is_cached(tiny_encoder):
    calls = []
    fail = [True]
    counting = _counting(tiny_encoder, calls, pause_s=0.05)

    async def flaky(texts):
        out = await counting(texts)
        if fail[0] and len(texts) > 1:
            raise RuntimeError("encoder down")
        return out

    clf = ZeroShotClassifier(flaky, tiny_encoder.model_id, tiny_encoder.logit_scale)
    templates = load_template_set("photo")

    async def main():
        return await asyncio.gather(*(clf.class_embeddings(LABELS, templates) for _ in range(3)),
                                    return_exceptions=True)

    assert [str(r) for r in asyncio.run(main())] == ["encoder down"] * 3
    assert len(calls) == 2 and not clf._inflight  # the probe, one encode shared by all three
    fail[0] = False
    assert Sync(clf).class_embeddings(LABELS, templates).shape == (len(LABELS), tiny_encoder.dim)
    assert len(calls) == 3  # nothing was cached: encoded again


def test_cache_is_bounded_in_bytes_least_recently_used_first():
    cache = ClassEmbeddingCache("m", max_bytes=2 * 16)  # room for two 4-float vectors
    cache.put_many("d", {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)})
    cache.get_many("d", ["a"])
    cache.put_many("d", {"c": np.ones(4, np.float32)})
    assert set(cache.get_many("d", ["a", "b", "c"])) == {"a", "c"}
    assert len(cache) == 2 and cache.nbytes == 32


def test_top_k_orders_and_clips():
    probs = np.array([[0.1, 0.7, 0.2]])
    assert top_k(probs, ["a", "b", "c"], 2) == [[("b", pytest.approx(0.7)), ("c", pytest.approx(0.2))]]
    assert len(top_k(probs, ["a", "b", "c"], 10)[0]) == 3


@pytest.mark.parametrize("labels, error", [
    ([], InvalidInput), (["cat", " cat "], InvalidInput), (["cat", "  "], InvalidInput),
    ("cat,dog", InvalidInput), ([1, 2], InvalidInput), (["x"] * 0 + [f"l{i}" for i in range(11)], PayloadTooLarge),
    (["a" * 300], InvalidInput),
])
def test_bad_labels(labels, error):
    with pytest.raises(error):
        clean_labels(labels, max_labels=10)


def test_labels_are_whitespace_normalised():
    assert clean_labels(["  golden   retriever ", "cat"]) == ["golden retriever", "cat"]


def test_top_k_below_one(tiny_encoder):
    clf = Sync(ZeroShotClassifier.from_encoder(tiny_encoder))
    with pytest.raises(InvalidInput, match="top_k"):
        clf.predict(tiny_encoder.encode_images(_images(1)), LABELS, load_template_set("photo"), k=0)
