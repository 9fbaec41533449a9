"""Weights in the bento: `zest models import SPEC` stores a CLIP model in the BentoML model store,
`ZEST_MODEL=NAME:VERSION` serves it, and `bentoml build` with that setting packs it into the bento."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from tests.images import png
from tests.server import Server, serving
from tests.test_packaging import _clean_copy, build_and_export
from zest.models.errors import ModelLoadError
from zest.models.spec import bento_tag, parse_spec
from zest.service.bento_models import default_store_name

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stored(tiny_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """`zest models import local-dir:<tiny checkpoint> --name tiny-clip` into a fresh BENTOML_HOME."""
    home = tmp_path_factory.mktemp("bentoml-home")
    out = subprocess.run([sys.executable, "-m", "zest.service.cli", "models", "import", f"local-dir:{tiny_checkpoint}",
                          "--name", "tiny-clip"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"})
    assert out.returncode == 0, out.stdout + out.stderr
    (tag,) = [line.split(" as ")[-1] for line in out.stdout.splitlines() if "to the BentoML model store as" in line]
    assert f"ZEST_MODEL={tag} zest serve" in out.stdout
    return home, tag


def test_models_import_stores_config_weights_and_source(stored, tiny_checkpoint):
    home, tag = stored
    name, version = tag.split(":")
    assert name == "tiny-clip"
    directory = home / "models" / name / version
    assert (directory / "open_clip_config.json").is_file()
    from safetensors.torch import load_file

    ours, theirs = load_file(directory / "open_clip_model.safetensors"), load_file(
        Path(tiny_checkpoint) / "open_clip_model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    info = yaml.safe_load((directory / "model.yaml").read_text())
    assert info["metadata"]["source_spec"] == f"local-dir:{tiny_checkpoint}"
    assert info["labels"] == {"project": "zest", "kind": "clip"}


def test_zest_model_tag_serves_the_stored_model(stored, tiny_encoder, tmp_path):
    home, tag = stored
    with serving(Server({"ZEST_MODEL": tag, "ZEST_DEVICE": "cpu", "BENTOML_HOME": str(home),
                         "ZEST_DATA_DIR": str(tmp_path / "data")}, tmp_path / "server.log")) as srv:
        texts = ["a red circle", "a dog"]
        r = requests.post(f"{srv.url}/embed/text", json={"texts": texts}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == tag  # the exact stored version
        np.testing.assert_allclose(r.json()["embeddings"], tiny_encoder.encode_texts(texts), atol=1e-5)
        r = requests.post(f"{srv.url}/classify", files=[("images", ("red.png", png("red"), "image/png"))],
                          data={"labels": "cat,dog", "top_k": "1"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == tag, r.text


def test_bento_built_with_the_tag_packs_the_model(stored, tmp_path):
    home, tag = stored
    src = _clean_copy(tmp_path / "checkout")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "ZEST_MODEL": tag}
    archive = build_and_export(src, env, home, "zest-clip-encoder", tag, tmp_path / "zest.bento")
    import tarfile

    name, version = tag.split(":")
    with tarfile.open(archive) as tar:
        packed = {m.name.rsplit("/", 1)[-1]: tar.extractfile(m).read() for m in tar.getmembers()
                  if f"models/{name}/{version}/" in m.name and m.isfile()}
    assert packed["open_clip_model.safetensors"] == (home / "models" / name / version /
                                                      "open_clip_model.safetensors").read_bytes()
    assert "open_clip_config.json" in packed


@pytest.mark.parametrize("spec, tag", [
    ("tiny-clip:abc123", "tiny-clip:abc123"),   # what `zest models import` prints
    ("tiny-clip:latest", "tiny-clip:latest"),
    ("bento:tiny-clip", "tiny-clip"),           # explicit, latest version
    ("bento:tiny-clip:abc123", "tiny-clip:abc123"),
    ("tiny-clip", None),                        # a bare name reads like a typo: never a tag
    ("zest-tiny", None),
    ("hf-hub:org/name", None),
    ("local-dir:/x", None),
    ("ViT-B-32/laion2b_s34b_b79k", None),
    ("ViT-B-32:abc", None),                     # tags are lower-case
])
def test_which_specs_are_bentoml_tags(spec, tag):
    assert bento_tag(spec) == tag
    if tag is not None:
        assert parse_spec(spec).kind == "bento" and parse_spec(spec).name == tag


def test_malformed_bento_spec_and_zest_models_are_refused():
    with pytest.raises(ModelLoadError, match="expected bento:NAME"):
        parse_spec("bento:Not A Tag")
    from zest.service.cli import main

    assert main(["models", "import", "zest-tiny"]) == 2  # it ships inside zest: nothing to import


def test_default_store_names():
    assert default_store_name("ViT-B-32/laion2b_s34b_b79k") == "vit-b-32-laion2b_s34b_b79k"
    assert default_store_name("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == "clip-vit-b-32-laion2b-s34b-b79k"
    assert default_store_name("local-dir:/models/My CLIP") == "my-clip"
