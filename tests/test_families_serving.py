"""End-to-end, the real server: a SigLIP-style model downloaded from a loopback hub and restarted from the cache with
the hub stopped (its HF tokenizer included), and a multilingual-style (HF text tower) model imported into the
model store, packed by `bentoml build` and served from the bento with HF_HUB_OFFLINE=1 and an empty HF cache."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from tests.families import build
from tests.hub import Hub, from_hub_then_from_cache, hf_env, serve_from_hub_then_from_cache
from tests.images import decode, patched_png
from tests.server import Server, serving
from tests.test_packaging import _clean_copy, build_and_export
from zest.models.clip_encoder import ClipEncoder

ROOT = Path(__file__).resolve().parent.parent
SIGLIP_REPO = "zest-test/tiny-siglip"  # what tests/families.py's SigLIP config names as hf_tokenizer_name
LABELS = ["cat", "dog", "red circle", "blue square", "tree"]


def _sigmoid_expected(encoder: ClipEncoder, colors: list[str]) -> np.ndarray:
    """sigmoid(scale · sim + bias) per label, from the model loaded in this process."""
    images = [decode(patched_png(c)).convert("RGB") for c in colors]
    sim = encoder.encode_images(images).astype(np.float64) @ encoder.encode_texts(LABELS).T.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-(encoder.logit_scale * sim + encoder.logit_bias)))


def test_siglip_from_the_hub_then_from_the_cache_with_the_hub_down(tmp_path):
    checkpoint = build("siglip", tmp_path / "siglip")
    encoder = ClipEncoder.from_spec(f"local-dir:{checkpoint}", device="cpu")
    files = {p.name: p for p in checkpoint.iterdir() if p.is_file()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    hub = Hub(tmp_path / "hub-files").start()
    hub.add_repo(SIGLIP_REPO, files)
    env = {**hf_env(hub.url, tmp_path / "hf"), "ZEST_MODEL": f"hf-hub:{SIGLIP_REPO}", "ZEST_DEVICE": "cpu",
           "BENTOML_HOME": str(tmp_path / "bentoml"), "ZEST_DATA_DIR": str(tmp_path / "data")}
    colors = ["red", "blue"]
    expected = _sigmoid_expected(encoder, colors)

    def check(srv, phase):
        r = requests.post(f"{srv.url}/classify", json={
            "images": [{"base64": base64.b64encode(patched_png(c)).decode(), "name": c} for c in colors],
            "labels": LABELS, "templates": ["{}"], "top_k": len(LABELS)}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scoring"] == "sigmoid"
        got = np.array([[{p["label"]: p["probability"] for p in res["predictions"]}[label] for label in LABELS]
                        for res in body["results"]])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        # multipart, with a threshold: only the labels that clear it ("none of these" is an empty list)
        cut = float(np.median(expected))
        r = requests.post(f"{srv.url}/classify", files=[("images", ("red.png", patched_png("red"), "image/png"))],
                          data={"labels": ",".join(LABELS), "templates": '["{}"]', "threshold": str(cut)},
                          timeout=60)
        assert r.status_code == 200, r.text
        kept = {p["label"] for p in r.json()["results"][0]["predictions"]}
        assert kept == {label for label, p in zip(LABELS, expected[0]) if p >= cut}
        assert requests.get(f"{srv.url}/info", timeout=30).json()["scoring"] == "sigmoid"
        if phase == "download":
            assert hub.downloads("tokenizer.json") == 1 and hub.downloads("tokenizer_config.json") == 1
            assert hub.downloads("open_clip_model.safetensors") == 1

    try:
        serve_from_hub_then_from_cache(hub, env, tmp_path, check, timeout=240)
    finally:
        hub.stop()


@pytest.fixture
def bento_with_hf_text_model(tmp_path) -> tuple[Path, str, np.ndarray]:
    """The HF-text-tower model imported (`zest models import`), its original HF config directory then removed,
    and a bento built with its tag and exported: (archive, tag, the model's features of LABELS)."""
    checkpoint = build("hf-text", tmp_path / "xlmr")
    expected = ClipEncoder.from_spec(f"local-dir:{checkpoint}", device="cpu").encode_texts(LABELS)
    home = tmp_path / "bentoml-build"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    out = subprocess.run([sys.executable, "-m", "zest.service.cli", "models", "import", f"local-dir:{checkpoint}",
                          "--name", "tiny-xlmr"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    (tag,) = [line.split(" as ")[-1] for line in out.stdout.splitlines() if "to the BentoML model store as" in line]
    stored = home / "models" / "tiny-xlmr" / tag.split(":")[1]
    text_cfg = json.loads((stored / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == "./hf_text_config"
    assert (stored / "hf_text_config" / "config.json").is_file() and (stored / "tokenizer.json").is_file()
    shutil.rmtree(tmp_path / "xlmr-parts")  # nothing outside the store holds the HF config any more
    shutil.rmtree(checkpoint)
    archive = build_and_export(_clean_copy(tmp_path / "checkout"), {**env, "ZEST_MODEL": tag}, home,
                               "zest-clip-encoder", tag, tmp_path / "zest.bento")
    return archive, tag, expected


def test_hf_text_model_imported_packed_and_served_offline_from_the_bento(bento_with_hf_text_model, tmp_path):
    archive, tag, expected = bento_with_hf_text_model
    home = tmp_path / "bentoml-serve"  # a fresh store: only what the bento carries
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    subprocess.run([sys.executable, "-m", "bentoml", "import", str(archive)], env=env, check=True, capture_output=True,
                   timeout=300)
    (bento,) = [p for p in (home / "bentos" / "zest").iterdir() if p.is_dir()]
    # the image's step before BentoML copies src in: zest's subpackage links (service/bento_image.py)
    for command in yaml.safe_load((bento / "bento.yaml").read_text())["image"]["post_commands"]:
        subprocess.run(["sh", "-c", command], cwd=bento, check=True, timeout=60)
    empty_hf = tmp_path / "empty-hf-home"
    empty_hf.mkdir()
    with serving(Server({"BENTOML_HOME": str(home), "ZEST_MODEL": tag, "ZEST_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                         "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(empty_hf), "ZEST_DATA_DIR": str(tmp_path / "data"),
                         "PYTHONPATH": str(bento / "src")},  # the bento's code, as its container runs it
                        tmp_path / "server.log", target=f"zest:{bento.name}", cwd=bento / "src"), timeout=240) as srv:
        r = requests.post(f"{srv.url}/embed/text", json={"texts": LABELS}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == tag
        np.testing.assert_allclose(r.json()["embeddings"], expected, atol=1e-5)
        r = requests.post(f"{srv.url}/classify", files=[("images", ("red.png", patched_png("red"), "image/png"))],
                          data={"labels": ",".join(LABELS), "top_k": "2"}, timeout=60)
        assert r.status_code == 200 and r.json()["scoring"] == "softmax", r.text
    assert not any(empty_hf.rglob("*.json"))  # nothing was fetched into (or looked up from) an HF cache


ARCH_TAG_SCRIPT = """
import json, sys
from pathlib import Path
import open_clip
from open_clip import pretrained
open_clip.add_model_config(sys.argv[1])
arch = Path(sys.argv[1]).stem
pretrained._PRETRAINED[arch] = {"webli": pretrained._slpcfg(hf_hub=sys.argv[2] + "/")}  # as open_clip lists SigLIP 2
from zest.models.clip_encoder import ClipEncoder
enc = ClipEncoder.from_spec(f"{arch}/webli", device="cpu")
print(json.dumps({"bias": enc.logit_bias, "texts": enc.encode_texts(json.loads(sys.argv[3])).tolist()}))
"""


def test_siglip_arch_tag_fetches_its_tokenizer_through_the_cache(tmp_path):
    """ARCH/TAG, the form `zest models import ViT-B-16-SigLIP2/webli` takes: the weights the tag names and the HF
    tokenizer its config names both come from the hub once, then from the cache with the hub stopped."""
    checkpoint = build("siglip", tmp_path / "tag")
    arch_json = tmp_path / "ZestFamily-siglip-tag.json"  # what build() registered the architecture from
    expected = ClipEncoder.from_spec(f"local-dir:{checkpoint}", device="cpu").encode_texts(LABELS)
    hub = Hub(tmp_path / "hub-files").start()
    hub.add_repo(SIGLIP_REPO, {p.name: p for p in checkpoint.iterdir() if p.is_file()})
    env = {**os.environ, **hf_env(hub.url, tmp_path / "hf")}

    def use(phase):
        out = subprocess.run([sys.executable, "-c", ARCH_TAG_SCRIPT, str(arch_json), SIGLIP_REPO, json.dumps(LABELS)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["bias"] == pytest.approx(-1.5)
        np.testing.assert_allclose(result["texts"], expected, atol=1e-5)
        if phase == "download":
            assert hub.downloads("tokenizer.json") == 1 and hub.downloads("open_clip_model.safetensors") == 1

    try:
        from_hub_then_from_cache(hub, use)
    finally:
        hub.stop()
