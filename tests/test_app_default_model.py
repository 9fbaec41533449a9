"""End-to-end with the shipped defaults (what the quick start serves): zest-tiny classifies shapes over
HTTP, and the shipped ZESRec model recommends from descriptions."""

from __future__ import annotations

import pytest
import requests

from tests.images import drawing, encode
from tests.server import Server, serving
from zest.training.embedded import scenes as S

LABELS = [f"{c} {s}" for c, s in S.ALL_COMBOS]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    with serving(Server({"ZEST_DATA_DIR": str(home / "data"), "BENTOML_HOME": str(home)},
                        home / "server.log")) as srv:  # ZEST_MODEL and ZEST_REC_MODEL unset: the shipped defaults
        yield srv


def _classify(server, images: list[bytes]) -> list[str]:
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = requests.post(f"{server.url}/classify", files=files, timeout=120,
                      data={"labels": ",".join(LABELS), "templates": "photo", "top_k": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "zest-tiny"
    return [res["predictions"][0]["label"] for res in r.json()["results"]]


def test_held_out_combinations_over_http(server):
    scenes = S.make_scenes(seed=99, n=16, split="heldout", stream=S.STREAM_EVAL_HELDOUT)
    truth = [f"{sc.spec.combo[0]} {sc.spec.combo[1]}" for sc in scenes]
    got = _classify(server, [encode(sc.image) for sc in scenes])
    correct = sum(g == t for g, t in zip(got, truth))
    assert correct >= 14, list(zip(truth, got))  # the floor is 95 %; 14/16 leaves room for sampling


def test_shapes_from_another_renderer(server):
    """Plain PIL drawings, not the training generator: a user's own images of these shapes."""
    drawings = {
        "red circle": lambda d: d.ellipse((40, 40, 160, 160), fill=(220, 30, 30)),
        "blue square": lambda d: d.rectangle((50, 50, 150, 150), fill=(30, 60, 220)),
        "yellow triangle": lambda d: d.polygon([(100, 35), (170, 165), (30, 165)], fill=(240, 220, 30)),
        "green circle": lambda d: d.ellipse((30, 60, 130, 160), fill=(30, 170, 50)),
    }
    images = [drawing(draw) for draw in drawings.values()]
    got = _classify(server, images)
    assert got == list(drawings), got


def test_shipped_recommender_ranks_by_description(server):
    items = [
        {"id": "toy", "text": "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy"},
        {"id": "lion", "text": "Lion King, The (1994). Genres: Adventure, Animation, Children, Drama, Musical"},
        {"id": "saw", "text": "Saw (2004). Genres: Horror, Mystery, Thriller"},
        {"id": "hostel", "text": "Hostel (2005). Genres: Horror"},
        {"id": "new-cartoon", "text": "A new animated family comedy about talking toys. Genres: Animation, Children"},
    ]
    r = requests.post(f"{server.url}/items", json={"items": items}, timeout=120)
    assert r.status_code == 200, r.text
    r = requests.post(f"{server.url}/recommend", timeout=120,
                      json={"history": ["toy", "lion"], "k": 3, "candidates": ["saw", "hostel", "new-cartoon"]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "zesrec-ml-latest-small"
    assert r.json()["items"][0]["id"] == "new-cartoon"  # a brand-new item, no interactions at all
