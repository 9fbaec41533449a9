import threading

import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from PIL import Image

from zest.models.classifier import ZeroShotClassifier, clean_labels
from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.models.lru import LRUCache
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

    clf = ZeroShotClassifier.from_encoder(tiny_encoder)
    classes = clf.class_embeddings(LABELS, templates)
    np.testing.assert_allclose(classes, ref_classes.T.numpy(), atol=1e-5)
    probs = clf.probabilities(tiny_encoder.encode_images(imgs), LABELS, templates)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(classes, axis=1), 1, atol=1e-5)


def test_repeat_request_never_touches_text_tower(tiny_encoder):
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return tiny_encoder.encode_texts(texts)

    clf = ZeroShotClassifier(counting, tiny_encoder.model_id, tiny_encoder.logit_scale)
    templates = load_template_set("imagenet-simple")
    feats = tiny_encoder.encode_images(_images(2))
    first = clf.predict(feats, LABELS, templates, k=3)
    assert calls == [len(LABELS) * 7]
    second = clf.predict(feats, LABELS, templates, k=3)
    assert calls == [len(LABELS) * 7]  # cached
    assert first == second
    clf.predict(feats, LABELS, user_template_set(["a {}"]), k=1)  # other templates: new entry
    clf.predict(feats, LABELS[::-1], templates, k=1)  # other class list: new entry
    assert len(calls) == 3


def test_cache_computes_once_under_concurrency():
    cache = LRUCache(4)
    computed = []
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        cache.get_or_compute("k", lambda: computed.append(1) or np.ones(3))

    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert computed == [1]


def test_cache_is_bounded_lru():
    cache = LRUCache(2)
    cache.put("a", 1), cache.put("b", 2)
    cache.get("a")
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2


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
    clf = ZeroShotClassifier.from_encoder(tiny_encoder)
    with pytest.raises(InvalidInput, match="top_k"):
        clf.predict(tiny_encoder.encode_images(_images(1)), LABELS, load_template_set("photo"), k=0)
