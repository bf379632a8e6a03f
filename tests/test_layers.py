"""The layers, read from the source: compiler <- runtime <- scripts, and no cycles inside one.

Every import counts, also the ones inside functions: a lazy import still couples two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

PACKAGES = ("compiler", "runtime", "scripts")
# What each layer may import of the project's packages.
ALLOWED = {
    "compiler": {"compiler"},
    "runtime": {"compiler", "runtime"},
    "scripts": {"compiler", "runtime", "scripts"},
}
# The compiler is the torch-free base: it runs on a login node without the runtime extra.
COMPILER_FORBIDS = {"torch", "lightning", "jsonargparse", "numpy", "torchmetrics", "safetensors"}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import statements under ``if TYPE_CHECKING:`` (never executed)."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }


def imports_of(path: Path, root: Path = REPO, executed_only: bool = False) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved); with
    ``executed_only``, the ones under ``if TYPE_CHECKING:`` left out."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_only(tree) if executed_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            found.add(stem)
            # `from pkg import mod` imports the module pkg.mod when there is one.
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def sources() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_each_layer_imports_only_the_layers_below(package: str) -> None:
    wrong = [
        f"{name} imports {target}"
        for name, path in sources().items()
        if name.split(".")[0] == package
        for target in imports_of(path)
        if target.split(".")[0] in PACKAGES and target.split(".")[0] not in ALLOWED[package]
    ]
    assert wrong == []


def test_compiler_imports_no_heavy_library() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, path in sources().items()
        if name.split(".")[0] == "compiler"
        for target in imports_of(path)
        if target.split(".")[0] in COMPILER_FORBIDS
    ]
    assert wrong == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions and resolves relative ones."""
    fake = tmp_path / "runtime" / "probe.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from ..scripts import common\n    import scripts.compare\n")
    assert {"scripts.common", "scripts.compare"} <= imports_of(fake, tmp_path)


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (module level and lazy; imports
    for type annotations only, under ``if TYPE_CHECKING:``, run never and are left out).

    A package's ``__init__`` runs before any of its modules, whatever imports them, so the
    edge to an ancestor package is no choice of the importing module and is left out.
    """
    modules = {name: path for name, path in sources().items() if name.split(".")[0] == package}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = {
            target
            for target in imports_of(path, executed_only=True)
            if target in modules and target != name and target not in ancestors
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    assert cycles(import_graph(package)) == []


def test_the_cycle_check_sees_a_lazy_cycle(tmp_path: Path) -> None:
    fake = tmp_path / "runtime" / "probe.py"
    fake.parent.mkdir()
    fake.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runtime import cli\n"
        "def f():\n    from runtime import runner\n"
    )
    assert "runtime.cli" in imports_of(fake, tmp_path)
    found = imports_of(fake, tmp_path, executed_only=True)
    assert "runtime.runner" in found
    assert "runtime.cli" not in found
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert cycles({"p.a": {"p.b"}, "p.b": set()}) == []
