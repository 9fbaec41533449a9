"""End to end: `zest adapt` into a BentoML model store, serve zest-tiny with the head (ZEST_HEADS), classify with
`head=` over HTTP, list heads, refuse a head made for another model, and `zest eval --url` against it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from tests.images import encode
from tests.server import ROOT, Server, serving
from zest.models.heads import Head, save_head
from zest.service.cli import main
from zest.training.embedded import scenes as S

COMBOS = [(c, s) for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]
NAMES = {combo: f"{S.SYNONYMS[combo[0]][0]} {S.SYNONYMS[combo[1]][0]}" for combo in COMBOS}  # "crimson ring"
FOREIGN_MODEL = "local-dir:/models/some-other-clip"


def _folder(root, seed: int, per_class: int):
    for i in range(per_class * len(COMBOS)):
        spec = S.sample_spec(seed, i, COMBOS, stream=3)
        path = root / f"{spec.colour}_{spec.shape}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        S.render(spec).save(path)
    (root / "classes.yaml").write_text("".join(f"{c}_{s}: {NAMES[(c, s)]}\n" for c, s in COMBOS))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "BENTOML_DO_NOT_TRACK": "True"}
    data = _folder(home / "shapes", seed=21, per_class=12)
    adapt = subprocess.run([sys.executable, "-m", "zest.service.cli", "adapt", str(data), "--name", "shapes",
                            "--device", "cpu", "--json", "--no-progress", "--cache-dir", str(home / "cache")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert adapt.returncode == 0, adapt.stderr
    report = json.loads(adapt.stdout)
    assert report["tag"].startswith("shapes:") and report["heldout"]["adapted"]["top1"] >= 0.9
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 256))
    foreign = save_head(Head(name="foreign", classes=("a", "b"), model_id=FOREIGN_MODEL,
                             weight=weight / np.linalg.norm(weight, axis=1, keepdims=True), bias=np.zeros(2),
                             logit_scale=30.0), home / "foreign-head")
    with serving(Server({"BENTOML_HOME": str(home), "ZEST_DATA_DIR": str(home / "data"), "ZEST_MODEL": "zest-tiny",
                         "ZEST_HEADS": f"shapes,{foreign}"}, home / "server.log")) as srv:
        yield srv, report, home


def test_heads_are_listed_with_their_metrics(served):
    srv, report, _ = served
    r = requests.get(f"{srv.url}/heads", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "zest-tiny"
    heads = {h["name"]: h for h in body["heads"]}
    assert set(heads) == {"shapes", "foreign"}
    shapes = heads["shapes"]
    assert shapes["usable"] and shapes["source"] == report["tag"] and shapes["model_id"] == "zest-tiny"
    assert len(shapes["classes"]) == 12 and "crimson ring" in shapes["classes"]
    assert shapes["metrics"]["adapted_top1"] == report["heldout"]["adapted"]["top1"]
    assert shapes["metrics"]["zero_shot_top1"] == report["heldout"]["zero_shot"]["top1"]
    assert heads["foreign"]["usable"] is False and heads["foreign"]["model_id"] == FOREIGN_MODEL
    paths = requests.get(f"{srv.url}/docs.json", timeout=30).json()["paths"]
    assert "/heads" in paths and "/classify" in paths


def test_classify_with_the_head(served):
    srv = served[0]
    scenes = [S.make_scene(S.sample_spec(99, i, COMBOS, stream=3)) for i in range(12)]  # new images
    files = [("images", (f"{i}.png", encode(sc.image), "image/png")) for i, sc in enumerate(scenes)]
    r = requests.post(f"{srv.url}/classify", files=files, data={"head": "shapes", "top_k": "3"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head"] == "shapes" and body["templates"] is None and body["model"] == "zest-tiny"
    got = [res["predictions"][0]["label"] for res in body["results"]]
    truth = [NAMES[sc.spec.combo] for sc in scenes]
    assert sum(g == t for g, t in zip(got, truth)) >= 10, list(zip(truth, got))
    assert all(len(res["predictions"]) == 3 for res in body["results"])
    # JSON body, same answer
    j = requests.post(f"{srv.url}/classify", timeout=60, json={
        "images": [base64.b64encode(encode(scenes[0].image)).decode()], "head": "shapes", "top_k": 1})
    assert j.status_code == 200, j.text
    assert j.json()["results"][0]["predictions"][0]["label"] == got[0]


@pytest.mark.parametrize("fields, status, message", [
    ({"head": "foreign"}, 409, f"made for model '{FOREIGN_MODEL}', but this server runs model 'zest-tiny'"),
    ({"head": "nope"}, 404, "no head named 'nope' is loaded; loaded heads: shapes, foreign"),
    ({"head": "shapes", "labels": "a,b"}, 400, "leave out labels and templates"),
    ({"head": "shapes", "templates": "photo"}, 400, "leave out labels and templates"),
])
def test_head_errors(served, fields, status, message):
    srv = served[0]
    img = encode(S.render(S.sample_spec(1, 0, COMBOS, stream=3)))
    r = requests.post(f"{srv.url}/classify", files=[("images", ("x.png", img, "image/png"))], data=fields, timeout=60)
    assert r.status_code == status, r.text
    assert r.json() == {"error": r.json()["error"]} and message in r.json()["error"]


def test_eval_against_the_server(served, tmp_path, capsys):
    srv, _, _home = served
    data = _folder(tmp_path / "fresh", seed=33, per_class=2)
    code = main(["eval", str(data), "--url", srv.url, "--head", "shapes", "--out", str(tmp_path / "out"), "--json",
                 "--no-progress"])
    assert code == 0
    with_head = json.loads(capsys.readouterr().out)
    assert with_head["mode"] == "url" and with_head["model"] == "zest-tiny" and with_head["n_images"] == 24
    code = main(["eval", str(data), "--url", srv.url, "--no-compare", "--out", str(tmp_path / "out2"), "--json",
                 "--no-progress"])
    assert code == 0
    zero_shot = json.loads(capsys.readouterr().out)
    assert with_head["top1"] >= 0.8 > zero_shot["top1"]
