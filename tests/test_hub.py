"""The download path, against a Hugging Face hub served on loopback (tests/hub.py).

- `hf-hub:ORG/NAME` downloads into a temporary HF cache and the real server serves it; restarted with the
  hub stopped, the server loads it from the cache.
- `ViT-B-32/laion2b_s34b_b79k` (the README's example) downloads the weights its open_clip pretrained entry
  names (`hf_hub: laion/CLIP-ViT-B-32-laion2B-s34B-b79K/`) from the loopback hub, which serves random
  weights made here, and zest loads them exactly as open_clip's own tag path does; then from the cache.
- A missing repository, and a stopped hub with an empty cache, fail at once with one clear error.
- zest-tiny and the recommender's MiniLM never ask the hub anything and leave the environment alone.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE at import, so everything that downloads runs
in a subprocess (the server, or `python -c`) with its own environment; this process stays offline.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from tests.hub import Hub, hf_env, serve_from_hub_then_from_cache, wait_closed
from tests.images import png

ROOT = Path(__file__).resolve().parent.parent
TINY_REPO = "zest-test/tiny-clip"
VIT_SPEC = "ViT-B-32/laion2b_s34b_b79k"
VIT_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
CONFIG, WEIGHTS = "open_clip_config.json", "open_clip_model.safetensors"


@pytest.fixture
def hub(tmp_path):
    hub = Hub(tmp_path / "hub-files").start()
    yield hub
    hub.stop()


@pytest.fixture
def tiny_repo(hub, tiny_checkpoint) -> str:
    """The tiny test model as a hub repository: a config with the full model_cfg (self-describing, so the
    server needs no registered architecture) and safetensors weights."""
    hub.add_repo(TINY_REPO, {CONFIG: Path(tiny_checkpoint) / CONFIG, WEIGHTS: Path(tiny_checkpoint) / WEIGHTS})
    return TINY_REPO


def _python(code: str, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    return out.stdout


def _online(hub_url: str, hf_home: Path) -> dict[str, str]:
    return {**os.environ, **hf_env(hub_url, hf_home)}


# -------------------------------------------------------------------------------------------------- hf-hub:

def test_hf_hub_spec_downloads_serves_and_restarts_from_the_cache(hub, tiny_repo, tiny_encoder, tmp_path):
    env = {**hf_env(hub.url, tmp_path / "hf"), "ZEST_MODEL": f"hf-hub:{tiny_repo}", "ZEST_DEVICE": "cpu",
           "BENTOML_HOME": str(tmp_path / "bentoml"), "ZEST_DATA_DIR": str(tmp_path / "data")}
    texts = ["a red circle", "a photo of a dog"]

    def check(srv, phase):
        r = requests.post(f"{srv.url}/embed/text", json={"texts": texts}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == f"hf-hub:{tiny_repo}"
        # the weights the hub served, not a random init
        np.testing.assert_allclose(r.json()["embeddings"], tiny_encoder.encode_texts(texts), atol=1e-5)
        r = requests.post(f"{srv.url}/classify", files=[("images", ("red.png", png("red"), "image/png"))],
                          data={"labels": "cat,dog,car", "top_k": "2"}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"][0]["predictions"]) == 2
        if phase == "download":
            assert hub.downloads(CONFIG) == 1 and hub.downloads(WEIGHTS) == 1, hub.requests
            # the weights went the LFS way: a 302 from the hub, the bytes from its "CDN"
            assert any(kind == "cdn" for _, _, kind in hub.requests)
            # nothing but the model's own repository was asked for: not zest-tiny, not the MiniLM
            assert all(path.startswith(f"/{tiny_repo}/") for _, path, kind in hub.requests if kind == "hub")

    serve_from_hub_then_from_cache(hub, env, tmp_path, check)
    snapshots = list((tmp_path / "hf" / "hub").glob(f"models--{tiny_repo.replace('/', '--')}/snapshots/*/"))
    assert len(snapshots) == 1 and {p.name for p in snapshots[0].iterdir()} == {CONFIG, WEIGHTS}


# -------------------------------------------------------------------------------------------------- ARCH/TAG

def _fake_vit_b_32_weights(path: Path) -> Path:
    """Random ViT-B-32 weights (fp16, 300 MB) with logit_scale = log(42), so that a test can tell them from
    a random init (whose scale is 1/0.07)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in open_clip.create_model("ViT-B-32", device="meta").state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=g) * 0.02).half() for k, s in shapes.items()}
    state["logit_scale"] = torch.full(shapes["logit_scale"], math.log(42.0)).half()
    save_file(state, str(path))
    return path


def test_arch_tag_downloads_the_weights_its_pretrained_entry_names(hub, tmp_path):
    import open_clip

    # open_clip's own registry entry for the README's example points at this hub repository
    assert open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"].rstrip("/") == VIT_REPO
    hub.add_repo(VIT_REPO, {WEIGHTS: _fake_vit_b_32_weights(tmp_path / "vit.safetensors")})
    env = _online(hub.url, tmp_path / "hf")
    out = _python(
        "import sys, json, open_clip, torch\n"
        "from zest.models.clip_encoder import ClipEncoder\n"
        "enc = ClipEncoder.from_spec(sys.argv[1], device='cpu')\n"
        "ref = open_clip.create_model('ViT-B-32', pretrained='laion2b_s34b_b79k')  # open_clip's own tag path\n"
        "ours = enc.model.state_dict()\n"
        "same = all(torch.equal(v, ours[k]) for k, v in ref.state_dict().items())\n"
        "print(json.dumps({'id': enc.model_id, 'dim': enc.dim, 'scale': enc.logit_scale, 'same_weights': same,\n"
        "                  'same_preprocess': dict(ref.visual.preprocess_cfg) == enc.preprocess_cfg}))\n",
        env, VIT_SPEC)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["id"] == VIT_SPEC and result["dim"] == 512
    assert result["scale"] == pytest.approx(42, rel=1e-3)
    assert result["same_weights"] and result["same_preprocess"]
    assert hub.downloads(WEIGHTS) == 1, hub.requests  # open_clip's second look found zest's download

    hub.stop()
    wait_closed(hub.url)
    out = _python("import sys\nfrom zest.models.clip_encoder import ClipEncoder\n"
                  "print(ClipEncoder.from_spec(sys.argv[1], device='cpu').logit_scale)", env, VIT_SPEC)
    assert float(out.strip().splitlines()[-1]) == pytest.approx(42, rel=1e-3)


# -------------------------------------------------------------------------------------------------- errors

_EXPECT_ERROR = """
import json, sys, time
import huggingface_hub, open_clip
from zest.models.clip_encoder import ClipEncoder
from zest.models.errors import ModelLoadError
out = {}
for spec in sys.argv[1:]:
    t = time.monotonic()
    try:
        ClipEncoder.from_spec(spec, device="cpu")
        out[spec] = {"error": None}
    except ModelLoadError as exc:
        out[spec] = {"error": str(exc), "seconds": time.monotonic() - t}
print(json.dumps(out))
"""


def _errors(env: dict[str, str], *specs: str) -> dict[str, dict]:
    return json.loads(_python(_EXPECT_ERROR, env, *specs).strip().splitlines()[-1])


def test_missing_repository_is_one_clear_error(hub, tiny_repo, tmp_path):
    spec = "hf-hub:zest-test/no-such-model"
    result = _errors(_online(hub.url, tmp_path / "hf"), spec)[spec]
    assert result["error"] is not None
    assert result["error"].startswith(f"cannot load model '{spec}': the hub at {hub.url} has no repository")
    assert "local-dir:" in result["error"] and "zest models import" in result["error"]  # what to pass instead
    assert result["seconds"] < 5
    assert [path for _, path, _ in hub.requests] == ["/zest-test/no-such-model/resolve/main/" + CONFIG]


def test_stopped_hub_with_an_empty_cache_fails_fast_saying_what_to_pass(hub, tmp_path):
    hub.stop()
    wait_closed(hub.url)
    specs = (f"hf-hub:{TINY_REPO}", VIT_SPEC)
    results = _errors(_online(hub.url, tmp_path / "empty-hf-home"), *specs)
    for spec in specs:
        error = results[spec]["error"]
        assert error is not None and error.startswith(f"cannot load model '{spec}': the weights are not in the "
                                                      f"local cache and the model hub cannot be reached"), error
        assert "local-dir:" in error and "NAME:VERSION" in error and "Connection refused" in error
        # one refused connection, no back-off: huggingface_hub's own retries take 20 s and more per file
        assert results[spec]["seconds"] < 5, results


# ------------------------------------------------------------------------------ offline only where it belongs

def test_zest_tiny_and_minilm_never_ask_the_hub_and_leave_the_environment_alone(hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
    out = _python("import os\nbefore = dict(os.environ)\n"
                  "from zest.models.clip_encoder import ClipEncoder\n"
                  "from zest.models.rec.text import TextEncoder\n"
                  "assert ClipEncoder.from_spec('zest-tiny', device='cpu').dim == 256\n"
                  "assert TextEncoder().encode(['a film about toys']).shape == (1, 384)\n"
                  "hub_vars = {k for k in set(before) | set(os.environ) if k.startswith(('HF_', 'TRANSFORMERS_'))}\n"
                  "print('changed:', sorted(k for k in hub_vars if before.get(k) != os.environ.get(k)))\n", env)
    assert out.strip().splitlines()[-1] == "changed: []"  # e.g. no HF_HUB_OFFLINE set behind the user's back
    assert hub.requests == []


def test_nothing_zest_ships_sets_hf_hub_offline():
    """`zest serve`, the bentofiles and the recommender's text encoder used to force HF_HUB_OFFLINE=1,
    so that no hub spec could ever download."""
    setting = re.compile(r"""environ(\.setdefault\(|\[)\s*["'](HF_HUB_OFFLINE|TRANSFORMERS_OFFLINE)|"""
                         r"""["'](HF_HUB_OFFLINE|TRANSFORMERS_OFFLINE)["']\s*:""")
    sources = [p for d in ("models", "service", "prompts", "training", "zest") for p in (ROOT / d).rglob("*.py")]
    assert sources and not [str(p) for p in sources if setting.search(p.read_text())]
    for bentofile in ("bentofile.yaml", "bentofile.gpu.yaml"):
        envs = {e["name"] for e in yaml.safe_load((ROOT / bentofile).read_text()).get("envs", [])}
        assert not envs & {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}, bentofile
