"""The project installs from its own files and `bentoml build` packs a working bento."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from zest.service.bento_image import link_command, subpackage_links

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_deps() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


# Imported only when present: lightfm/scipy behind the optional LightFM baseline of `zest rec eval` (installed
# by hand: it builds only without build isolation, see the README); httptools, uvicorn's faster HTTP parser,
# which service/http_limits.py also guards when uvicorn[standard] brings it.
OPTIONAL_IMPORTS = {"lightfm", "scipy", "httptools", "openvino"}  # openvino: the `openvino` extra


def _third_party_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for folder in ("zest", "models", "service", "prompts", "store"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "zest":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_directly_imported_library_is_declared():
    declared = {canonicalize_name(Requirement(d).name) for d in _pyproject_deps()}
    dists = packages_distributions()
    missing = {}
    for module, files in _third_party_imports().items():
        if module in OPTIONAL_IMPORTS:
            continue
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(files)
    assert not missing, f"imported but not in [project].dependencies: {missing}"


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_bentofiles_declare_no_second_package_list(bentofile):
    """A bentofile may say where the wheels come from (the CPU one: PyTorch's CPU index), never which packages."""
    from zest.service.bento_image import CPU_TORCH_INDEX

    config = yaml.safe_load((ROOT / bentofile).read_text())
    assert "docker" not in config, "the image comes from service/bento_image.py"
    assert config.get("python", {}) == ({"extra_index_url": [CPU_TORCH_INDEX]} if bentofile == "bentofile.yaml"
                                        else {}), "packages come from pyproject via service/bento_image.py"


def test_bento_image_installs_exactly_the_declared_dependencies():
    from zest.service.bento_image import bento_image, declared_dependencies

    assert declared_dependencies() == _pyproject_deps()
    assert bento_image().python_requirements.split("\n")[:-1] == _pyproject_deps()


def _clean_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if rel.startswith(("tests/", "benchmarks/", "data/")):
            continue
        if src.is_symlink():  # zest/models -> ../models etc.: the package's subpackages, copied as links
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).symlink_to(os.readlink(src))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_and_export(src: Path, env: dict[str, str], home: Path, service: str, tag: str, archive: Path) -> Path:
    """`bentoml build` in `src` (BentoML home `home`), check that `service` declares exactly the model `tag`,
    then `bentoml export` the bento to `archive` (what containerize/push ship: the model travels inside)."""
    out = subprocess.run([sys.executable, "-m", "bentoml", "build"], check=False, cwd=src, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (bento,) = [p for p in (home / "bentos" / "zest").iterdir() if p.is_dir()]
    services = {s["name"]: s for s in yaml.safe_load((bento / "bento.yaml").read_text())["services"]}
    assert [m["tag"] for m in services[service]["models"]] == [tag]
    subprocess.run([sys.executable, "-m", "bentoml", "export", f"zest:{bento.name}", str(archive)],
                   cwd=src, env=env, check=True, capture_output=True, timeout=300)
    return archive


def _check_image(requirements: list[str], dockerfile: str, envs: dict[str, str], device: str) -> None:
    """The image: CPU torch from PyTorch's CPU index (whose torch==2.14.1 is the +cpu wheel, with
    no nvidia-*/triton), CUDA torch from PyPI for the GPU bento; no compilers or git; no layer twice."""
    from zest.service.bento_image import CPU_TORCH_INDEX

    index_lines = [r for r in requirements if r.startswith("--")]
    torch_pins = [r for r in requirements if r.startswith(("torch==", "torchvision=="))]
    assert len(torch_pins) == 2 and all("+" not in r for r in torch_pins)  # the index decides the build, not a pin
    if device == "cpu":
        assert index_lines == [f"--extra-index-url {CPU_TORCH_INDEX}"]
        # uv's default takes a package only from the first index that has it; best-match: +cpu torch, the rest
        # from PyPI. It has to be set before the install step.
        assert envs["UV_INDEX_STRATEGY"] == "unsafe-best-match"
        assert dockerfile.index("ENV UV_INDEX_STRATEGY=") < dockerfile.index("pip install -r")
    else:
        assert index_lines == [] and "UV_INDEX_STRATEGY" not in envs  # PyPI's torch: the CUDA build
    assert not any(r.lower().startswith(("nvidia-", "triton", "cuda-")) for r in requirements)
    for word in ("apt-get", "build-essential", "gcc", "git ", "gnupg"):
        assert word not in dockerfile, f"{word!r} in the runtime image"
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    assert len(runs) == len(set(runs)), "a layer runs twice"


@pytest.mark.parametrize("bentofile, device", [("bentofile.yaml", "cpu"), ("bentofile.gpu.yaml", "cuda")])
def test_bentoml_build_from_clean_checkout(tmp_path, bentofile, device):
    src = _clean_copy(tmp_path / "checkout")
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("ZEST_GPUS", None)
    out = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", bentofile, "--output", "tag"],
                         check=False, cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (bento,) = [p for p in (home / "bentos" / "zest").iterdir() if p.is_dir()]
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "zest.service.app:Zest"
    assert (bento / "src" / "prompts" / "sets" / "imagenet.yaml").is_file()
    assert (bento / "src" / "service" / "app.py").is_file()
    for name in ("index.html", "app.js", "style.css"):  # the playground at /ui
        assert (bento / "src" / "service" / "ui" / name).is_file(), name
    assert (bento / "src" / "zest" / "__init__.py").is_file()
    assert (bento / "src" / "models" / "rec" / "checkpoint" / "model.safetensors").is_file()
    assert not (bento / "src" / "tests").exists()
    assert not (bento / "src" / "training").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert requirements[:len(_pyproject_deps())] == [d.replace("'", '"') for d in _pyproject_deps()]
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim " in dockerfile
    envs = {e["name"]: e["value"] for e in info["envs"]}
    assert envs["ZEST_DEVICE"] == device
    _check_image(requirements, dockerfile, envs, device)
    # the image's one step of its own, before the packages: the subpackage links (then BentoML's `COPY . ./`)
    (command,) = info["image"]["commands"]
    assert info["image"]["post_commands"] == []
    assert command == link_command(subpackage_links())
    container = tmp_path / "container"
    container.mkdir()
    subprocess.run(["sh", "-c", command], cwd=container, check=True, timeout=60)
    shutil.copytree(bento, container, dirs_exist_ok=True, symlinks=True)
    # the bento's src imports as the zest package (what the container's `bentoml serve` does)
    probe = subprocess.run([sys.executable, "-c", "import zest.service.settings as s, sys; print(s.__file__)"],
                           check=False, cwd=container / "src", capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(container / "src")})
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(container / "src"), probe.stdout


def test_bento_packs_the_stored_recommender_model(rec_model_dir, tmp_path):
    """`zest rec train` stores the model in BentoML's store; `bentoml build` then packs it."""
    src = _clean_copy(tmp_path / "checkout")
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    save = subprocess.run([sys.executable, "-c", ("import sys; from zest.service.bento_models import save_to_store; "
                                                  "print(save_to_store(sys.argv[1], 'zesrec'))"), str(rec_model_dir)],
                          cwd=src, env=env, capture_output=True, text=True, check=True)
    tag = save.stdout.strip().splitlines()[-1]
    assert tag.startswith("zesrec:")
    archive = build_and_export(src, {**env, "ZEST_REC_MODEL": tag}, home, "zest-recommender", tag,
                               tmp_path / "zest.bento")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model.safetensors")
                      and "models/zesrec/" in m.name)
        packed = tar.extractfile(member).read()
    assert packed == (Path(rec_model_dir) / "model.safetensors").read_bytes()
