"""zest-tiny: the shipped checkpoint, its frozen pretrained text tower, and its scene generator."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import shutil

import numpy as np
import pytest
import torch

from zest.models.embedded.model import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FROZEN_PREFIX,
    MINILM_PLACEHOLDER,
    MODEL_CARD_FILE,
    WEIGHTS_FILE,
    minilm_dir,
)
from zest.models.errors import ModelLoadError
from zest.training.embedded import scenes as S

TEXTS = [
    "a red circle",
    "A photo of a striped blue square on a grey background.",
    "the heart is green",
    "an orange hexagon with dots",
    "zero-shot classification with a frozen sentence encoder",
]


@pytest.fixture(scope="module")
def encoder():
    from zest.models.clip_encoder import ClipEncoder

    return ClipEncoder.from_spec("zest-tiny", device="cpu", precision="fp32", batch_size=64)


# ------------------------------------------------------------------------------ shipped checkpoint

def test_checkpoint_is_small_and_portable():
    files = {p.name: p.stat().st_size for p in CHECKPOINT_DIR.iterdir() if p.is_file()}
    assert {CONFIG_FILE, WEIGHTS_FILE, MODEL_CARD_FILE} <= set(files)
    assert sum(files.values()) < 20e6
    config = json.loads((CHECKPOINT_DIR / CONFIG_FILE).read_text())
    text_cfg = config["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == MINILM_PLACEHOLDER  # no machine-specific path committed
    assert str(minilm_dir()) not in json.dumps(config)
    assert {"size", "mean", "std", "interpolation"} <= set(config["preprocess_cfg"])


def test_zero_shot_floors(encoder):
    from zest.training.embedded.evaluate import evaluate

    r = evaluate(encoder, seed=7, n_per_class=10)
    assert r["n_classes"] == len(S.ALL_COMBOS) == 42
    assert r["seen_top1"] >= 0.98, r
    assert r["heldout_top1"] >= 0.95, r
    assert r["heldout_synonym_top1"] >= 3 * r["chance"], r  # well above chance with never-trained words


def test_encoder_contract(encoder):
    assert encoder.model_id == "zest-tiny"
    assert encoder.image_size == (64, 64)
    assert encoder.context_length == 64
    img = encoder.encode_images([S.make_scenes(0, 1, "all", S.STREAM_EVAL_SEEN)[0].image])
    txt = encoder.encode_texts(TEXTS)
    assert img.shape == (1, encoder.dim) and txt.shape == (len(TEXTS), encoder.dim)
    assert img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert 1.0 < encoder.logit_scale <= 100.0


# ------------------------------------------------------------------------------ frozen MiniLM tower

def test_text_tower_is_pretrained_minilm(encoder):
    from sentence_transformers import SentenceTransformer

    model = encoder.model
    ids = encoder.tokenizer(TEXTS)
    mask = (ids != model.text.config.pad_token_id).long()
    with torch.no_grad():
        pooled = model.text.pooler(model.text.transformer(input_ids=ids, attention_mask=mask), mask)
    st = SentenceTransformer(str(minilm_dir()), device="cpu")  # Transformer -> mean Pooling -> Normalize
    reference = st.encode(TEXTS, convert_to_numpy=True)
    ours = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)

    # and the served text features are exactly projection(pooled MiniLM) of the same texts
    with torch.no_grad():
        projected = torch.nn.functional.normalize(model.text.proj(pooled), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_texts(TEXTS), projected, atol=1e-5)


def test_text_tower_stayed_frozen(encoder):
    from safetensors import safe_open
    from safetensors.torch import load_file

    trained = load_file(str(CHECKPOINT_DIR / WEIGHTS_FILE))
    assert not [k for k in trained if k.startswith(FROZEN_PREFIX)]
    assert sorted(k for k in trained if k.startswith("text.")) == ["text.proj.weight"]
    assert any(k.startswith("visual.") for k in trained) and "logit_scale" in trained

    tower = {k[len(FROZEN_PREFIX):]: v for k, v in encoder.model.state_dict().items() if k.startswith(FROZEN_PREFIX)}
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as package:
        names = set(package.keys())
        assert set(tower) <= names
        for name, value in tower.items():
            assert torch.equal(value, package.get_tensor(name)), name
    assert not any(p.requires_grad for p in encoder.model.text.transformer.parameters())


# ------------------------------------------------------------------------------ loader errors

def test_missing_checkpoint_says_how_to_train(tmp_path):
    from zest.models.embedded import load_zest_tiny

    with pytest.raises(ModelLoadError, match="train-embedded"):
        load_zest_tiny("cpu", checkpoint_dir=tmp_path / "nothing-here")


def test_unexpected_or_text_tensors_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from zest.models.embedded import load_zest_tiny

    state = load_file(str(CHECKPOINT_DIR / WEIGHTS_FILE))
    for name, extra in [("stray", {"visual.not_a_layer": torch.zeros(1)}),
                        ("text", {FROZEN_PREFIX + "embeddings.LayerNorm.bias": torch.zeros(384)})]:
        ckpt = tmp_path / name
        ckpt.mkdir()
        shutil.copy(CHECKPOINT_DIR / CONFIG_FILE, ckpt / CONFIG_FILE)
        save_file({**state, **extra}, str(ckpt / WEIGHTS_FILE))
        with pytest.raises(ModelLoadError):
            load_zest_tiny("cpu", checkpoint_dir=ckpt)


# ------------------------------------------------------------------------------ scene generator

def test_generator_is_deterministic():
    a = S.make_scenes(3, 12, "all")
    b = S.make_scenes(3, 12, "all")
    assert [x.caption for x in a] == [x.caption for x in b]
    assert all(x.image.tobytes() == y.image.tobytes() and x.image.size == y.image.size for x, y in zip(a, b))
    c = S.make_scenes(4, 12, "all")
    assert any(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, c))
    # evaluation streams never reproduce training scenes
    train_seeds = {s.render_seed for s in S.make_specs(0, 200, "train", S.STREAM_TRAIN)}
    assert not train_seeds & {s.render_seed for s in S.make_specs(0, 200, "train", S.STREAM_EVAL_SEEN)}


def test_generator_coverage():
    assert len(S.SHAPES) >= 6 and len(S.COLOUR_NAMES) >= 6
    assert set(S.HELDOUT_COMBOS) <= set(S.ALL_COMBOS)
    assert not set(S.HELDOUT_COMBOS) & set(S.TRAIN_COMBOS)
    assert len(S.TRAIN_COMBOS) + len(S.HELDOUT_COMBOS) == len(S.ALL_COMBOS)
    for colour, shape in S.HELDOUT_COMBOS:  # each part still seen in training with other partners
        assert sum(c == colour for c, _ in S.TRAIN_COMBOS) >= 3
        assert sum(s == shape for _, s in S.TRAIN_COMBOS) >= 3


def test_heldout_combos_and_synonyms_never_in_training_captions():
    from zest.training.embedded.train import training_captions

    captions, index = training_captions(seed=0, n=3000, k=2)
    specs = S.make_specs(0, 3000, "train", S.STREAM_TRAIN)
    assert not {s.combo for s in specs} & set(S.HELDOUT_COMBOS)
    synonym_words = {w for syns in S.SYNONYMS.values() for phrase in syns for w in S.caption_words(phrase)}
    colours, shapes = set(S.COLOUR_NAMES), set(S.SHAPES)
    assert len(captions) > 500  # varied phrasings
    for spec, row in zip(specs, index):
        for j in row:
            words = S.caption_words(captions[j])
            assert not words & synonym_words, captions[j]
            # a caption names its own colour and shape and no other: no held-out pair is ever described
            assert words & colours == {spec.colour}, captions[j]
            assert words & shapes == {spec.shape}, captions[j]


def test_model_card_renders_from_its_template_files(tmp_path):
    from zest.training.embedded.train import write_model_card

    labels = [f"{c} {s}" for c, s in S.ALL_COMBOS]
    confusion = np.zeros((len(labels), len(labels)), int)
    confusion[0, 1] = 3
    metrics = dict(n_classes=42, chance=1 / 42, templates="photo", n_per_class=20, seed=7, n_seen_images=640,
                   seen_top1=0.984, n_heldout_images=200, heldout_top1=0.98, heldout_synonym_top1=0.115,
                   heldout_colour_synonym_top1=0.3, heldout_shape_synonym_top1=0.6, seen_synonym_top1=0.2,
                   heldout_colour_top1=0.99, heldout_shape_top1=0.97, confusion=confusion.tolist(), labels=labels)
    summary = json.loads((CHECKPOINT_DIR / CONFIG_FILE).read_text())["training"]
    card = write_model_card(tmp_path, summary, metrics).read_text()
    assert "| held-out combinations | 200 | **98.0 %** |" in card
    assert f"{labels[0]} → {labels[1]} (3)" in card and f"seed {summary['seed']}" in card
    assert "$" not in card  # every placeholder filled
    assert "Not evaluated" in write_model_card(tmp_path, summary, None).read_text()
