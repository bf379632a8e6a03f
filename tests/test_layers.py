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


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
