"""The bento's container image, built from the one list of dependencies: pyproject.toml's
``[project].dependencies``.

BentoML's Python image SDK (``bentoml.images.Image``) installs them with uv into a virtualenv of its own
Python, so the CPU and the GPU bento share this image: PyTorch's Linux wheels carry their CUDA runtime, and a
GPU container needs only the host's NVIDIA driver (``docker run --gpus all``). The two bentofiles differ in
settings (``ZEST_DEVICE``, ``ZEST_GPUS``), never in packages. BentoML copies no directory symlink into a
bento, so the image recreates zest's subpackage links (``zest/models -> ../models``, ...) in the bento's src.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

PYTHON_VERSION = "3.11"
DISTRIBUTION = "zest"


def declared_dependencies() -> list[str]:
    """zest's runtime requirements, as written in pyproject.toml (extras excluded).

    In a source tree (a checkout, or a bento's src/) pyproject.toml sits beside the package and is read
    directly; an installed wheel carries the same list in its metadata.
    """
    import zest

    pyproject = Path(zest.__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == DISTRIBUTION:
            return list(project.get("dependencies", []))
    requires = metadata.requires(DISTRIBUTION) or []
    return [r for r in requires if "extra==" not in r.replace(" ", "")]


def subpackage_links() -> dict[str, str]:
    """zest's subpackages: the symbolic links in the package folder, name -> target (``models`` -> ``../models``)."""
    import zest

    package = Path(zest.__file__).parent
    return {p.name: os.readlink(p) for p in sorted(package.iterdir()) if p.is_symlink()}


def link_command(links: dict[str, str]) -> str:
    """The shell step that recreates the links in the bento's src/zest (run in the image before BentoML copies
    src in: the links then resolve to the copied folders)."""
    made = " && ".join(f"ln -sfn {shlex.quote(target)} src/zest/{shlex.quote(name)}"
                       for name, target in links.items())
    return f"mkdir -p src/zest && {made}"


def bento_image():
    """The image `bentoml build` writes into the bento (env/docker/Dockerfile, env/python/requirements.txt).
    Called once per process (the `Zest` service declaration in service/app.py), so pyproject.toml is read once."""
    import bentoml

    image = bentoml.images.Image(python_version=PYTHON_VERSION, distro="debian",
                                 lock_python_packages=False).python_packages(*declared_dependencies())
    links = subpackage_links()  # none in an installed wheel (real folders there); a bento is built from a checkout
    return image.run(link_command(links)) if links else image
