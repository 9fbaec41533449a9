"""Every open_clip family served by its own rules, checked on tiny models built in the test (tests/families.py):
classic CLIP, SigLIP-style, an HF-text-tower (xlm-roberta-style) CLIP, CoCa and a timm image tower.

For each: zest's embeddings equal open_clip's own normalised features (built independently, with
`create_model_and_transforms` and `get_tokenizer`); /classify's probabilities equal open_clip's logits turned
into the family's probabilities (softmax, or sigmoid with the logit bias); the text-padding shortcut is taken
only where it is exact; the ONNX runtimes pass the fidelity gate or are refused with a reason.
"""

from __future__ import annotations

import logging

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tests.aio import Sync, local
from tests.families import FAMILIES, SIGLIP_BIAS, build
from tests.images import decode, patched_png
from zest.models.clip_encoder import ClipEncoder
from zest.models.errors import InvalidInput
from zest.service.pipeline import ClipPipeline, EncoderInfo, RawImage
from zest.service.settings import Settings

TEXTS = ["a photo of a cat.", "A Red   Circle!", "dog",
         ("this is a large picture of the green tree on a sign, a small blue square and a yellow star on a black and "
          "white pattern"), ""]
LABELS = ["cat", "dog", "red circle", "blue square", "tree"]
COLORS = ("red", "blue", "green")
TRIMMED = {"clip": True, "siglip": False, "hf-text": True, "coca": False, "timm-image": True}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("families")
    return {family: str(build(family, root / family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def encoders(checkpoints) -> dict[str, ClipEncoder]:
    return {f: ClipEncoder.from_spec(f"local-dir:{d}", device="cpu", batch_size=2) for f, d in checkpoints.items()}


@pytest.fixture(scope="module")
def reference(checkpoints):
    """open_clip's own model, eval transform and tokenizer for a family, loaded by open_clip alone."""
    def load(family: str):
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{checkpoints[family]}")
        return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{checkpoints[family]}")
    return load


def _images() -> list[Image.Image]:
    return [decode(patched_png(c)).convert("RGB") for c in COLORS]


@pytest.mark.parametrize("family", FAMILIES)
def test_embeddings_equal_open_clip_features(family, encoders, reference):
    model, preprocess, tokenizer = reference(family)
    with torch.no_grad():
        ref_img = torch.nn.functional.normalize(model.encode_image(torch.stack([preprocess(i) for i in _images()])),
                                                dim=-1).numpy()
        ref_txt = torch.nn.functional.normalize(model.encode_text(tokenizer(TEXTS)), dim=-1).numpy()
    enc = encoders[family]
    assert (enc.encode_images(_images()) * ref_img).sum(1).min() >= 0.9999
    assert (enc.encode_texts(TEXTS) * ref_txt).sum(1).min() >= 0.9999


def _pipeline(encoder: ClipEncoder, tmp_path) -> ClipPipeline:
    return Sync(ClipPipeline(Settings(data_dir=str(tmp_path)), EncoderInfo.of(encoder), local(encoder.encode_pixels),
                             local(encoder.encode_texts)))


@pytest.mark.parametrize("family", FAMILIES)
def test_classify_equals_open_clip_logits_as_the_familys_probabilities(family, encoders, reference, tmp_path):
    model, preprocess, tokenizer = reference(family)
    with torch.no_grad():
        image_f = torch.nn.functional.normalize(model.encode_image(torch.stack([preprocess(i) for i in _images()])),
                                                dim=-1)
        text_f = torch.nn.functional.normalize(model.encode_text(tokenizer(LABELS)), dim=-1)
        logits = model.logit_scale.exp() * image_f @ text_f.T  # open_clip's get_logits, in its label order
        if model.logit_bias is not None:
            logits = logits + model.logit_bias
    expected = torch.sigmoid(logits) if family == "siglip" else logits.softmax(-1)

    out = _pipeline(encoders[family], tmp_path).classify(
        [RawImage(c, patched_png(c)) for c in COLORS], LABELS, ["{}"], top_k=len(LABELS))
    assert out.scoring == ("sigmoid" if family == "siglip" else "softmax")
    got = np.array([[{p.label: p.probability for p in r.predictions}[label] for label in LABELS] for r in out.results])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    if family == "siglip":
        assert abs(encoders[family].logit_bias - SIGLIP_BIAS) < 1e-6
        assert not np.allclose(got.sum(1), 1.0, atol=1e-3)  # per-label probabilities, not shared out
    else:
        np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_threshold_returns_the_labels_that_clear_it_for_sigmoid_models(encoders, tmp_path):
    pipeline = _pipeline(encoders["siglip"], tmp_path)
    raw = [RawImage(c, patched_png(c)) for c in COLORS]
    every = pipeline.classify(raw, LABELS, ["{}"], top_k=len(LABELS))
    probs = sorted(p.probability for r in every.results for p in r.predictions)
    cut = probs[len(probs) // 2]  # half the (image, label) pairs clear it
    out = pipeline.classify(raw, LABELS, ["{}"], threshold=cut)
    assert out.threshold == pytest.approx(cut)
    for full, kept in zip(every.results, out.results):
        assert [p.label for p in kept.predictions] == [p.label for p in full.predictions if p.probability >= cut]
    assert 0 < sum(len(r.predictions) for r in out.results) < len(probs)
    none = pipeline.classify(raw, LABELS, ["{}"], threshold=1.0)  # "none of these": an empty list per image
    assert all(r.predictions == [] for r in none.results)
    capped = pipeline.classify(raw, LABELS, ["{}"], threshold=0.0, top_k=2)
    assert all(len(r.predictions) == 2 for r in capped.results)


@pytest.mark.parametrize("threshold, message", [(0.5, "softmax"), (1.5, "between 0 and 1"), ("x", "between 0 and 1")])
def test_threshold_is_refused_for_softmax_models_and_out_of_range(encoders, tmp_path, threshold, message):
    pipeline = _pipeline(encoders["clip"] if message == "softmax" else encoders["siglip"], tmp_path)
    with pytest.raises(InvalidInput, match=message):
        pipeline.classify([RawImage("r", patched_png("red"))], LABELS, None, threshold=threshold)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_padding_shortcut_only_where_exact(family, encoders):
    enc = encoders[family]
    assert (enc._encode_trimmed is not None) == TRIMMED[family]
    with torch.inference_mode():
        full = torch.nn.functional.normalize(enc.model.encode_text(enc.tokenizer(TEXTS)).float(), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_texts(TEXTS), full, atol=1e-5)


# Each case exports and gates a model (~15-40 s on the shared CI machine): ONNX fp32 for every family but classic
# CLIP (tests/test_runtimes.py covers both runtimes there), int8 for the two new text towers (on these random tiny
# models both are refused by the gate: a refusal names its reason and leaves torch serving).
@pytest.mark.parametrize("family, runtime", [(f, "onnx") for f in FAMILIES if f != "clip"] +
                         [("siglip", "onnx-int8"), ("hf-text", "onnx-int8")])
def test_onnx_runtimes_pass_the_gate_or_are_refused_with_a_reason(family, runtime, encoders, tmp_path, caplog):
    enc = encoders[family]
    with caplog.at_level(logging.INFO, logger="zest.models.clip_encoder"):
        served = enc.with_runtime(runtime, tmp_path)
    if served.runtime == runtime:
        assert served.fidelity is not None and served.fidelity.passed
        assert served.logit_bias == enc.logit_bias  # the family's scoring travels with the fast path
        assert (served.encode_texts(TEXTS) * enc.encode_texts(TEXTS)).sum(1).min() >= 0.999
        assert (served.encode_images(_images()) * enc.encode_images(_images())).sum(1).min() >= 0.999
    else:
        assert served is enc
        refusal = [r.getMessage() for r in caplog.records if f"runtime {runtime} refused" in r.getMessage()]
        assert refusal and ("fidelity gate" in refusal[0] or "Error" in refusal[0]), caplog.text


@pytest.mark.parametrize("family", ["hf-text", "siglip"])
def test_exported_checkpoint_carries_tokenizer_and_hf_text_config(family, tmp_path):
    """What `zest models import` stores loads with nothing else: for an `hf_model_name` tower, the HF config is
    packed and the config points at the packed copy (the original config directory is gone here)."""
    import json
    import shutil

    from zest.models.factory import load_clip
    from zest.models.loading import CONFIG_FILE, HF_TEXT_DIR, export_checkpoint
    from zest.models.spec import parse_spec

    source = build(family, tmp_path / "src")
    original = ClipEncoder.from_spec(f"local-dir:{source}", device="cpu")
    exported = export_checkpoint(load_clip(parse_spec(f"local-dir:{source}"), torch.device("cpu")), tmp_path / "out")
    shutil.rmtree(tmp_path / "src-parts", ignore_errors=True)  # the HF config directory the source named
    shutil.rmtree(source)
    text_cfg = json.loads((exported / CONFIG_FILE).read_text())["model_cfg"]["text_cfg"]
    if family == "hf-text":
        assert text_cfg["hf_model_name"] == f"./{HF_TEXT_DIR}" and (exported / HF_TEXT_DIR / "config.json").is_file()
    assert (exported / "tokenizer.json").is_file()
    copy = ClipEncoder.from_spec(f"local-dir:{exported}", device="cpu")
    np.testing.assert_allclose(copy.encode_texts(TEXTS), original.encode_texts(TEXTS), atol=1e-6)
    np.testing.assert_allclose(copy.encode_images(_images()), original.encode_images(_images()), atol=1e-6)
    assert copy.logit_bias == original.logit_bias


def test_an_adapted_head_on_a_sigmoid_model_scores_with_softmax(encoders, tmp_path):
    """A head from `zest adapt` is trained with cross-entropy: on a SigLIP model it answers softmax
    probabilities (its own), and a threshold is refused for it."""
    from zest.models.heads import Head, Heads

    enc = encoders["siglip"]
    head = Head(name="shapes", classes=tuple(LABELS), model_id=enc.model_id, weight=enc.encode_texts(LABELS),
                bias=np.zeros(len(LABELS), np.float32), logit_scale=enc.logit_scale)
    pipeline = Sync(ClipPipeline(Settings(data_dir=str(tmp_path)), EncoderInfo.of(enc), local(enc.encode_pixels),
                                 local(enc.encode_texts), heads=Heads([head])))
    raw = [RawImage(c, patched_png(c)) for c in COLORS]
    out = pipeline.classify(raw, None, None, top_k=len(LABELS), head="shapes")
    assert out.scoring == "softmax" and out.head == "shapes"
    expected = head.probabilities(enc.encode_images(_images()))
    got = np.array([[{p.label: p.probability for p in r.predictions}[label] for label in LABELS] for r in out.results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(InvalidInput, match="head's scoring is softmax"):
        pipeline.classify(raw, None, None, head="shapes", threshold=0.5)
