"""zest has one import root: nothing imports a bare `models`, `service` or `prompts`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# zest's subpackages: the symbolic links in zest/ (zest/models -> ../models, ...), the project's one list of them
SUBPACKAGES = sorted(p.name for p in (ROOT / "zest").iterdir() if p.is_symlink())
BARE = set(SUBPACKAGES)
SOURCE_DIRS = ("zest", *SUBPACKAGES, "tests", "benchmarks")


def _python_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_is_a_link_to_its_top_level_folder():
    assert {"models", "prompts", "service", "store", "training"} <= BARE
    for name in SUBPACKAGES:
        link = ROOT / "zest" / name
        assert link.readlink() == Path("..") / name, link  # relative: a checkout or copy anywhere works
        assert (link / "__init__.py").is_file(), link


def test_the_package_adds_nothing_to_its_own_search_path():
    """Tools follow `zest.*` only when the filesystem is the package: no runtime `__path__` edits."""
    import zest

    assert zest.__path__ == [str(ROOT / "zest")]
    assert "__path__" not in (ROOT / "zest" / "__init__.py").read_text()


def _bare_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in BARE]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] in BARE:
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


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_resolve_under_zest(name):
    from importlib import import_module

    module = import_module(f"zest.{name}")
    assert Path(module.__file__) == ROOT / "zest" / name / "__init__.py"


def _module_graph() -> dict[str, set[str]]:
    """zest's modules -> the zest modules they import (module level and inside functions alike)."""
    folders = {"zest": "zest", **{name: f"zest.{name}" for name in SUBPACKAGES}}
    modules: dict[str, Path] = {}
    for folder, package in folders.items():
        for path in (ROOT / folder).rglob("*.py"):
            if folder == "zest" and path.parent != ROOT / "zest":
                continue  # zest/<sub>/ are the links to the subpackage folders, walked below
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    prefix = ".".join(base[: len(base) - node.level + 1])
                    mod = f"{prefix}.{node.module}" if node.module else prefix
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_import_cycle_among_zest_modules():
    """A cycle (even one broken by an import inside a function) means two modules that are really one."""
    graph = _module_graph()
    # a package's __init__ re-exporting its own modules is not a cycle of logic: drop parent -> child edges
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_serving_code_never_imports_training():
    graph = _module_graph()
    serving = [m for m in graph if m.startswith(("zest.models", "zest.prompts", "zest.service", "zest.store"))
               and m != "zest.service.cli"]  # the CLI dispatches `zest rec train` / `zest train-embedded`
    seen, todo = set(), list(serving)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [t for t in graph[module] if t != "zest.service.cli"]
    assert not {m for m in seen if m.startswith("zest.training")}


def test_loaded_clip_and_spec_parsing_import_nothing_of_the_loaders():
    """`LoadedClip` imports nothing of zest's; parsing a spec imports only the error types."""
    graph = _module_graph()
    assert graph["zest.models.loaded"] == set()
    assert graph["zest.models.spec"] <= {"zest.models.errors"}


def test_every_shipped_model_resolves_to_a_loader():
    from importlib import import_module

    from zest.models.spec import SHIPPED_MODELS

    for name, (module, function) in SHIPPED_MODELS.items():
        assert callable(getattr(import_module(module, package="zest.models"), function)), name
