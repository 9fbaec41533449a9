"""The processes that run no model import no model library: the `bentoml serve` arbiter (it loads the service
module to build the graph) and the API worker import `zest.service.app`, which must not pull in torch & co.
The model services import them in their `__init__`, in their own worker processes (issue #24, memory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


def _loaded(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", f"{code}; {LIST_THEM}", *MODEL_LIBRARIES], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


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
    that imports torch (has_model once did, through the recommender package) shows here."""
    import psutil

    from benchmarks.harness.memory import zest_role

    # ZEST_REC_MODEL unset: the shipped recommender model, the default, whose lookup is what the API worker runs
    with running_server(tiny_checkpoint, rec_model_dir, tmp_path, ZEST_REC_MODEL="") as srv:
        image = b64(png("red", (40, 30)))
        for path, body in (("/embed/image", {"images": [image]}), ("/embed/text", {"texts": ["a cat"]}),
                           ("/classify", {"images": [image], "labels": ["cat", "dog"]}),
                           ("/items", {"items": [{"id": "a", "text": "a film about a cat"}]})):
            r = requests.post(f"{srv.url}{path}", json=body, timeout=120)
            assert r.status_code == 200, (path, r.text)
        root = psutil.Process(srv.proc.pid)
        held = {zest_role(p.cmdline(), p.pid == root.pid): _mapped_libraries(p.pid)
                for p in [root, *root.children(recursive=True)]}
    assert set(held) == {"arbiter", "api", "encoder", "recommender"}, held
    assert held["arbiter"] == held["api"] == set(), held
    assert "torch" in held["encoder"] and "torch" in held["recommender"], held  # the check sees them
