"""The processes that run no model import no model library: the `bentoml serve` arbiter (it loads the service
module to build the graph) and the API worker import `zest.service.app`, which must not pull in torch & co.
The model services import them in their `__init__`, in their own worker processes (issue #24, memory); the
recommender runs its ZESRec net in numpy and, served, has its item texts embedded (MiniLM) by the encoder service:
it imports torch never; in-process (`zest rec`, training) MiniLM and torch load on the first text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.images import b64, png
from tests.server import running_server

ROOT = Path(__file__).resolve().parent.parent
MODEL_LIBRARIES = ("torch", "torchvision", "open_clip", "timm", "transformers", "sentence_transformers",
                   "tokenizers", "onnxruntime", "onnx", "openvino")
LIST_THEM = ("import sys; heavy = set(sys.argv[1:]); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))")
IMPORTS = {
    "api worker": "import zest.service.app",
    # what the arbiter and every BentoML worker run first: the service graph, loaded by name
    "arbiter": "from bentoml._internal.service.loader import load; load('zest.service.app:Zest', working_dir='.')",
}


def _run(code: str, env: dict[str, str]) -> list[str]:
    """The lines `code` prints, then (last) the model libraries it has imported."""
    out = subprocess.run([sys.executable, "-c", f"{code}; {LIST_THEM}", *MODEL_LIBRARIES], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def _loaded(code: str, env: dict[str, str]) -> str:
    return _run(code, env)[-1]


@pytest.mark.parametrize("settings", ["tests'", "default"])
@pytest.mark.parametrize("process", sorted(IMPORTS))
def test_processes_that_run_no_model_import_no_model_library(process, settings, tmp_path):
    env = dict(os.environ)  # the suite's: tests/conftest.py's ZEST_* and offline settings
    if settings == "default":
        env = {k: v for k, v in env.items() if not k.startswith(("ZEST_", "HF_", "TRANSFORMERS_"))}
        env["HOME"] = str(tmp_path)  # zest's default data dir (~/.zest), kept out of the real home
    assert _loaded(IMPORTS[process], env) == "[]"


def test_the_check_sees_a_model_library():
    """The same check, on a module that does import torch: it is not blind."""
    assert "torch" in _loaded("import zest.models.clip_encoder", dict(os.environ))


STORED = [f"m{i}" for i in range(12)]
# the recommender worker's start-up (its module, then RecommenderService.__init__'s build_recommender) and two
# rankings of stored items: the whole catalogue (the store's search) and candidates (ZesRec.recommend)
RECOMMENDER = (
    "import json, zest.service.recommender_service; from zest.service.process import SETTINGS; "
    "from zest.service.recommender import build_recommender, shipped_model_dir; "
    "r = build_recommender(shipped_model_dir(), 'zesrec-ml-latest-small', SETTINGS); "
    "print(json.dumps([r.recommend(history=['m0', 'm3', 'm5'], k=4), "
    "r.recommend(history=['m1'], k=3, candidates=['m1', 'm2', 'm7', 'm9', 'm11'])]))")


def _store_items(data_dir: Path) -> np.ndarray:
    """The catalogue of `STORED` in the embedded store under `data_dir`, as the shipped model's item rows of random
    text embeddings (no MiniLM, no torch in the process that reads it); returns those rows."""
    from zest.models.rec.zesrec import load
    from zest.service.catalog import ItemCatalog
    from zest.service.recommender import model_fingerprint, open_store_for, shipped_model_dir
    from zest.service.settings import Settings

    model = load(shipped_model_dir())
    emb = np.random.default_rng(0).standard_normal((len(STORED), 384)).astype(np.float32)
    rows = model.embed_text_embeddings(emb / np.linalg.norm(emb, axis=1, keepdims=True))
    by_text = {f"item {i}": r for i, r in zip(STORED, rows)}
    store = open_store_for(Settings(data_dir=str(data_dir)), "catalog")
    catalog = ItemCatalog(store, lambda texts: np.stack([by_text[t] for t in texts]),
                          fingerprint=model_fingerprint(shipped_model_dir()), dim=model.dim)
    catalog.upsert([(i, f"item {i}") for i in STORED])
    catalog.close()
    return rows


def _expected_ranking(rows: np.ndarray, history: list[str], k: int, pool: list[str]) -> list[str]:
    from zest.models.rec.zesrec import load
    from zest.service.recommender import shipped_model_dir

    user = load(shipped_model_dir()).user_vector(rows[[STORED.index(i) for i in history]])
    scores = {i: float(rows[STORED.index(i)] @ user) for i in pool if i not in history}
    return sorted(scores, key=lambda i: -scores[i])[:k]


def test_the_recommender_ranks_stored_items_without_torch(tmp_path):
    """Start-up from the shipped checkpoint and ranking histories of stored items import no model library: the
    ZESRec net runs in numpy; in-process, torch comes with MiniLM, when a text has to be embedded."""
    rows = _store_items(tmp_path / "data")
    env = {**os.environ, "ZEST_DATA_DIR": str(tmp_path / "data"), "ZEST_REC_MODEL": "",
           "ZEST_VECTOR_STORE": "embedded"}
    *printed, loaded = _run(RECOMMENDER, env)
    assert loaded == "[]"
    whole, candidates = json.loads(printed[-1])
    assert [i["id"] for i in whole["items"]] == _expected_ranking(rows, ["m0", "m3", "m5"], 4, STORED)
    assert [i["id"] for i in candidates["items"]] == _expected_ranking(rows, ["m1"], 3, ["m2", "m7", "m9", "m11"])
    with_text = RECOMMENDER.replace("r.recommend(history=['m1']", "r.recommend(history_texts=['a film about a cat']")
    assert "torch" in _loaded(with_text, env)  # the check sees torch once MiniLM runs


def _mapped_libraries(pid: int) -> set[str]:
    """The model libraries whose files (shared objects) process `pid` has mapped."""
    import psutil

    found = set()
    for region in psutil.Process(pid).memory_maps():
        match = re.search(r"site-packages/([^/]+)/", region.path)
        if match and match.group(1) in MODEL_LIBRARIES:
            found.add(match.group(1))
    return found


def test_a_warm_server_runs_the_model_libraries_only_in_the_model_services(tiny_checkpoint, rec_model_dir, tmp_path):
    """What the processes hold after real requests, not just after imports: a call at start-up or per request
    that imports torch (has_model once did, through the recommender package) shows here. The recommender holds
    none even after it has embedded item texts: MiniLM runs in the encoder service (issue #24)."""
    import psutil

    from benchmarks.harness.memory import zest_role

    def held() -> dict[str, set[str]]:
        root = psutil.Process(srv.proc.pid)
        return {zest_role(p.cmdline(), p.pid == root.pid): _mapped_libraries(p.pid)
                for p in [root, *root.children(recursive=True)]}

    _store_items(tmp_path / "data")  # a catalogue already there: ranking it embeds no text
    # ZEST_REC_MODEL unset: the shipped recommender model, the default, whose lookup is what the API worker runs
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path, ZEST_REC_MODEL="") as srv:
        image = b64(png("red", (40, 30)))
        for path, body in (("/embed/image", {"images": [image]}), ("/embed/text", {"texts": ["a cat"]}),
                           ("/classify", {"images": [image], "labels": ["cat", "dog"]}),
                           ("/recommend", {"history": ["m0", "m1"], "k": 3}),
                           ("/recommend", {"history": ["m2"], "k": 2, "candidates": ["m3", "m4", "m5"]})):
            r = requests.post(f"{srv.url}{path}", json=body, timeout=120)
            assert r.status_code == 200, (path, r.text)
        ranked = held()
        r = requests.post(f"{srv.url}/items", json={"items": [{"id": "a", "text": "a film about a cat"}]}, timeout=120)
        assert r.status_code == 200, r.text
        r = requests.post(f"{srv.url}/recommend", json={"history_texts": ["a dog"], "k": 2}, timeout=120)
        assert r.status_code == 200, r.text
        embedded = held()
    assert set(ranked) == {"arbiter", "api", "encoder", "recommender"}, ranked
    assert ranked["arbiter"] == ranked["api"] == ranked["recommender"] == set(), ranked
    assert "torch" in ranked["encoder"], ranked  # the check sees them
    assert embedded["arbiter"] == embedded["api"] == embedded["recommender"] == set(), embedded
