"""One home per idea: each of these is defined in one module, and nothing else spells it.

The checkpoint resolver (``runtime.rundir.RunDir``) has its own check in
``test_rundir_resolver.py``; the exit codes live in ``compiler.exitcodes``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REPO

PACKAGES = ("compiler", "runtime", "scripts")


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text())


def _imports(module: str) -> Callable[[ast.AST], bool]:
    def check(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(alias.name.split(".")[0] == module for alias in node.names)
        return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == module

    return check


def _yaml_reading(node: ast.AST) -> bool:
    """``yaml.load`` and friends, or a loader class: parsing YAML."""
    readers = {"load", "safe_load", "load_all", "safe_load_all", "full_load", "unsafe_load"}
    readers |= {"compose", "parse", "scan", "SafeLoader", "CSafeLoader", "Loader", "CLoader"}
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id == "yaml" and node.attr in readers
    return isinstance(node, ast.Constant) and node.value in {"CSafeLoader", "CParser"}


def _renaming(node: ast.AST) -> bool:
    """A rename into place: what an atomic writer does last."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    func = node.func
    if isinstance(func.value, ast.Name) and func.value.id in {"os", "shutil"}:
        return func.attr in {"replace", "rename", "renames", "move"}
    return func.attr == "rename"


def _error_line(node: ast.AST) -> bool:
    """Text that starts an error line (``PROG: error: ...``): the printer's format."""
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
        return any(str(p).startswith("error: ") or ": error: " in str(p) for p in parts)
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value.startswith("error: ") or ": error: " in node.value)
    )


def _key_path(node: ast.AST) -> bool:
    """A literal key path into a run config's ``model`` or ``data`` arguments."""
    if not isinstance(node, ast.Tuple | ast.List) or len(node.elts) < 2:
        return False
    head = [e.value if isinstance(e, ast.Constant) else None for e in node.elts[:2]]
    return head in (["model", "init_args"], ["data", "init_args"])


def _docstrings(tree: ast.Module) -> set[ast.AST]:
    """Docstrings may describe a format; only code counts as a home."""
    owners = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef))]
    return {
        o.body[0].value
        for o in owners
        if o.body and isinstance(o.body[0], ast.Expr) and isinstance(o.body[0].value, ast.Constant)
    }


def _batch_reading(node: ast.AST) -> bool:
    """Collating a dataset's samples into a batch (or asking it for a whole one)."""
    if isinstance(node, ast.ImportFrom) and node.module == "torch.utils.data":
        return any(alias.name == "default_collate" for alias in node.names)
    return isinstance(node, ast.Name) and node.id == "BatchFetching"


HOMES = {
    "did-you-mean (difflib)": (_imports("difflib"), {"compiler/errors.py"}),
    "YAML reading": (_yaml_reading, {"compiler/yamlload.py"}),
    "atomic writing (rename into place)": (_renaming, {"compiler/files.py"}),
    "the error printer": (_error_line, {"compiler/errors.py"}),
    "run-config key paths": (_key_path, {"compiler/keypaths.py"}),
    "reading a batch of samples": (
        _batch_reading,
        {"runtime/data/base.py", "runtime/protocols.py"},
    ),
}


@pytest.mark.parametrize("idea", list(HOMES))
def test_each_idea_has_one_home(idea: str) -> None:
    matches, home = HOMES[idea]
    found: dict[str, list[int]] = {}
    for name, tree in _sources():
        docs = _docstrings(tree)
        lines = [n.lineno for n in ast.walk(tree) if n not in docs and matches(n)]
        if lines:
            found[name] = lines
    assert set(found) <= home, f"{idea} outside its home {sorted(home)}: {found}"


def test_the_checks_see_a_second_home(tmp_path: Path) -> None:
    """Each matcher finds the thing it looks for in a stray module."""
    stray = ast.parse(
        "import difflib, os, yaml\n"
        "doc = yaml.safe_load(text)\n"
        "os.replace(tmp, path)\n"
        "print(f'{prog}: error: {message}')\n"
        "TASKS = ('model', 'init_args', 'tasks')\n"
        "from torch.utils.data import default_collate\n"
    )
    for idea, (matches, _) in HOMES.items():
        assert any(matches(n) for n in ast.walk(stray)), idea
