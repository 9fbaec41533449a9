"""The project installs from its own files and `bentoml build` packs a working bento."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_deps() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {r.name.lower(): r for r in reqs if r.marker is None or r.marker.evaluate()}


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_bentofile_packages_match_pyproject(bentofile):
    packages = yaml.safe_load((ROOT / bentofile).read_text())["python"]["packages"]
    bento = {Requirement(p).name.lower(): Requirement(p) for p in packages}
    ours = _pyproject_deps()
    assert bento.keys() == ours.keys()
    for name, req in ours.items():
        if name in ("torch", "torchvision") and req.marker is not None:
            continue  # pyproject pins these per platform; the bento pins the x86_64 release
        assert str(bento[name].specifier) == str(req.specifier), name


def _clean_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "benchmarks/", "data/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.parametrize("bentofile, base", [("bentofile.yaml", "python:3.11-slim"),
                                             ("bentofile.gpu.yaml", "nvidia/cuda")])
def test_bentoml_build_from_clean_checkout(tmp_path, bentofile, base):
    src = _clean_copy(tmp_path / "checkout")
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    out = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", bentofile, "--output", "tag"],
                         cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (bento,) = [p for p in (home / "bentos" / "zest").iterdir() if p.is_dir()]
    assert yaml.safe_load((bento / "bento.yaml").read_text())["service"] == "zest.service.app:Zest"
    assert (bento / "src" / "prompts" / "sets" / "imagenet.yaml").is_file()
    assert (bento / "src" / "service" / "app.py").is_file()
    assert not (bento / "src" / "tests").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "open_clip_torch" in requirements and "torch==" in requirements
    assert base in (bento / "env" / "docker" / "Dockerfile").read_text()


def test_bento_packs_the_stored_recommender_model(rec_model_dir, tmp_path):
    """`zest rec train` stores the model in BentoML's store; `bentoml build` then packs it."""
    src = _clean_copy(tmp_path / "checkout")
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    save = subprocess.run([sys.executable, "-c", "import sys; from service.model_store import save_to_store; "
                           "print(save_to_store(sys.argv[1], 'zesrec'))", str(rec_model_dir)],
                          cwd=src, env=env, capture_output=True, text=True, check=True)
    tag = save.stdout.strip().splitlines()[-1]
    assert tag.startswith("zesrec:")
    out = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=src,
                         env={**env, "ZEST_REC_MODEL": tag}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (bento,) = [p for p in (home / "bentos" / "zest").iterdir() if p.is_dir()]
    services = {s["name"]: s for s in yaml.safe_load((bento / "bento.yaml").read_text())["services"]}
    assert [m["tag"] for m in services["zest-recommender"]["models"]] == [tag]
    archive = tmp_path / "zest.bento"  # what containerize/push ship: the model travels inside
    subprocess.run([sys.executable, "-m", "bentoml", "export", f"zest:{bento.name}", str(archive)],
                   cwd=src, env=env, check=True, capture_output=True, timeout=300)
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model.safetensors")
                      and "models/zesrec/" in m.name)
        packed = tar.extractfile(member).read()
    assert packed == (Path(rec_model_dir) / "model.safetensors").read_bytes()
