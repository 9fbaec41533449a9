"""zest has one import root: nothing imports a bare `models`, `service` or `prompts`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BARE = {"models", "service", "prompts"}
SOURCE_DIRS = ("zest", "models", "service", "prompts", "tests", "benchmarks")


def _python_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _bare_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in BARE]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in BARE:
                found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def test_no_module_imports_a_bare_top_level_package():
    offenders = {str(p.relative_to(ROOT)): bad for p in _python_files() if (bad := _bare_imports(p))}
    assert not offenders, f"import zest.* (or relative inside the package) instead: {offenders}"


@pytest.mark.parametrize("package", sorted(BARE))
def test_package_code_uses_relative_imports(package):
    """Inside the package, zest's own modules are imported relatively (as open_clip does)."""
    absolute = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("zest."):
                absolute.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not absolute, absolute


def test_subpackages_resolve_under_zest():
    import zest.models
    import zest.prompts
    import zest.service

    for mod, folder in ((zest.models, "models"), (zest.prompts, "prompts"), (zest.service, "service")):
        assert Path(mod.__file__).parent.name == folder
