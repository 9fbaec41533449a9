"""The wheel a user installs with `pip install .` is complete: installed into a fresh virtualenv outside the
checkout, started from a directory that holds decoy `models/`, `prompts/` and `service.py`, `zest serve`
classifies, stores items and recommends."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest
import requests

from tests.images import drawing
from tests.server import Server, serving
from tests.test_packaging import _clean_copy

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    src = _clean_copy(tmp_path_factory.mktemp("checkout"))  # what git tracks: no stale build/ leftovers
    # --no-build-isolation: the build needs only setuptools, already in the test environment (no registry)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("zest-*.whl")
    return whl


def test_wheel_holds_one_import_root_and_every_data_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"zest"}, top
    for needed in ("zest/models/rec/checkpoint/model.safetensors", "zest/models/rec/checkpoint/config.json",
                   "zest/models/embedded/checkpoint/zest_tiny.safetensors",
                   "zest/models/embedded/checkpoint/zest_tiny_config.json",
                   "zest/prompts/sets/imagenet.yaml", "zest/service/app.py", "zest/training/rec/cli.py",
                   "zest/service/ui/index.html", "zest/service/ui/app.js", "zest/service/ui/style.css"):
        assert needed in names, needed


def _running_site_dirs() -> list[str]:
    """Where the interpreter running the tests finds its packages: its own site-packages (a virtualenv's, or
    the system Python's) and any it inherits (``--system-site-packages``, the user site)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout holding the wheel; the heavy dependencies come from the
    environment running the tests (a .pth lists its package folders after the venv's own, so the venv's zest
    wins, and the .pth files in those folders, the editable install's among them, are not run)."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    (Path(own) / "zest-test-deps.pth").write_text("".join(f"{d}\n" for d in _running_site_dirs()))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return env_dir


def _decoy(directory: Path) -> Path:
    """What a user's project directory may hold: folders and modules with zest's old top-level names."""
    for pkg in ("models", "prompts"):
        (directory / pkg).mkdir(parents=True)
        (directory / pkg / "__init__.py").write_text("raise ImportError('decoy: the user\\'s own package')\n")
    (directory / "service.py").write_text("raise ImportError('decoy: the user\\'s own service.py')\n")
    return directory


def test_installed_package_is_imported_from_the_venv_not_the_checkout(venv, tmp_path):
    cwd = _decoy(tmp_path / "project")
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import zest.service.app, zest.models.rec, zest; print(zest.__file__)"],
                         check=False, cwd=cwd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout


def _png_of_shape() -> bytes:
    return drawing(lambda d: d.ellipse((40, 40, 160, 160), fill=(220, 30, 30)))


def test_zest_serve_from_the_installed_wheel(venv, tmp_path):
    cwd = _decoy(tmp_path / "project")
    env = {"PYTHONPATH": "", "BENTOML_HOME": str(tmp_path / "bentoml"), "ZEST_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    with serving(Server(env, tmp_path / "serve.log", command=[str(venv / "bin" / "zest"), "serve"], cwd=cwd),
                 timeout=240) as server:
        url = server.url
        r = requests.post(f"{url}/classify", files=[("images", ("c.png", _png_of_shape(), "image/png"))],
                          data={"labels": "red circle,blue square,green triangle", "top_k": "1"}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["predictions"][0]["label"] == "red circle"

        items = [{"id": "toy", "text": "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy"},
                 {"id": "saw", "text": "Saw (2004). Genres: Horror, Mystery, Thriller"},
                 {"id": "cartoon", "text": "A new animated family comedy about talking toys. Genres: Animation"}]
        r = requests.post(f"{url}/items", json={"items": items}, timeout=120)
        assert r.status_code == 200, r.text  # 503 here: the wheel lacks the recommender checkpoint
        assert r.json()["total"] == 3
        r = requests.post(f"{url}/recommend", json={"history": ["toy"], "k": 2}, timeout=120)
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == ["cartoon", "saw"]

        # the server runs the installed code, not the checkout's
        workers = psutil.Process(server.proc.pid).children(recursive=True)
        assert workers
        assert all(str(ROOT) not in " ".join(p.cmdline()) for p in workers)


def test_installed_package_serves_the_playground_files(venv, tmp_path):
    code = ("from zest.service.playground import FILES, read; "
            "print(sorted((n, len(read(n)) > 500) for n in FILES))")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": ""}, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[('app.js', True), ('index.html', True), ('style.css', True)]"
