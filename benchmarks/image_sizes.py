"""Expected bento image sizes, from the wheels zest's dependencies install (no Docker engine needed).

Walks pyproject.toml's [project].dependencies through the distributions installed here (the CUDA torch build
PyPI serves) and sums each one's installed files (its RECORD), split into the GPU stack (nvidia-*, cuda-*,
triton), torch itself and the rest. With --pypi it also reads the compressed wheel sizes of those exact
versions from PyPI's JSON API (what a pull downloads). `--cpu-torch-wheel PATH` gives a +cpu torch wheel to
measure in place of CUDA torch (PyTorch's CPU index, where that wheel lives, may be unreachable; any local copy
of a +cpu wheel of a nearby version is a close estimate).

    python3 benchmarks/image_sizes.py --pypi --cpu-torch-wheel /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
GPU_PREFIXES = ("nvidia-", "cuda-", "triton")
BASE_IMAGE_MB = 125  # python:3.11-slim, uncompressed (Docker Hub lists ~45 MB compressed); plus uv below
UV_MB = 40


def closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the requirements pull in (extras followed; markers evaluated here)."""
    found: dict[str, metadata.Distribution] = {}

    def walk(req: str, extras: tuple[str, ...] = ("",)) -> None:
        r = Requirement(req)
        if r.marker and not any(r.marker.evaluate({"extra": e}) for e in extras):
            return
        name = canonicalize_name(r.name)
        if name in found and not r.extras:
            return
        dist = found.get(name) or metadata.distribution(name)
        found[name] = dist
        for dep in dist.requires or []:
            walk(dep, tuple(r.extras) or ("",))

    for req in requirements:
        walk(req)
    return found


def installed_mb(dist: metadata.Distribution) -> float:
    return sum((f.size or 0) for f in (dist.files or [])) / 1e6


def wheel_mb(name: str, version: str) -> float | None:
    """Compressed size of the cp311 / py3 manylinux x86_64 (or pure) wheel of `name==version` on PyPI."""
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=30) as resp:
        files = json.load(resp)["releases"].get(version, [])
    wheels = [f for f in files if f["filename"].endswith(".whl")
              and (("manylinux" in f["filename"] and "x86_64" in f["filename"]) or "none-any" in f["filename"])
              and any(tag in f["filename"] for tag in ("cp311", "py3", "abi3"))]
    return wheels[0]["size"] / 1e6 if wheels else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pypi", action="store_true", help="also read compressed wheel sizes from PyPI")
    ap.add_argument("--cpu-torch-wheel", type=Path, help="a +cpu torch wheel to measure instead of CUDA torch")
    args = ap.parse_args(argv)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    dists = closure(deps)
    groups: dict[str, float] = {"gpu stack": 0.0, "torch": 0.0, "rest": 0.0}
    wheels: dict[str, float] = {"gpu stack": 0.0, "torch": 0.0, "rest": 0.0}
    for name, dist in dists.items():
        group = "torch" if name == "torch" else "gpu stack" if name.startswith(GPU_PREFIXES) else "rest"
        groups[group] += installed_mb(dist)
        if args.pypi:
            wheels[group] += wheel_mb(name, dist.version.split("+")[0]) or 0.0
    cpu_torch = None
    if args.cpu_torch_wheel:
        with zipfile.ZipFile(args.cpu_torch_wheel) as z:
            cpu_torch = (sum(i.file_size for i in z.infolist()) / 1e6, args.cpu_torch_wheel.stat().st_size / 1e6)
    print(f"{len(dists)} distributions; installed MB: " + ", ".join(f"{k} {v:.0f}" for k, v in groups.items()))
    if args.pypi:
        print("compressed wheels MB (PyPI): " + ", ".join(f"{k} {v:.0f}" for k, v in wheels.items()))
    base = BASE_IMAGE_MB + UV_MB
    gpu = base + sum(groups.values())
    print(f"GPU image ~{gpu / 1e3:.1f} GB installed (base {base} MB + packages)")
    if cpu_torch:
        cpu = base + groups["rest"] + cpu_torch[0]
        print(f"CPU image ~{cpu / 1e3:.1f} GB installed (+cpu torch {cpu_torch[0]:.0f} MB installed, "
              f"{cpu_torch[1]:.0f} MB wheel, from {args.cpu_torch_wheel.name})")
    print(json.dumps({"installed_mb": groups, "wheels_mb": wheels if args.pypi else None,
                      "cpu_torch_mb": cpu_torch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
