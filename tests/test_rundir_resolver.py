"""RunDir: the one place that knows a run directory's files and resolves a checkpoint request
(best / last / best-<task> / step-<N> / a path) by one rule, and no other module spelling
those file names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

from runtime.config_errors import ConfigError
from runtime.rundir import CHECKPOINT_NAME, RunDir, resolve_checkpoint

# What only runtime/rundir.py may spell: the run directory's file and folder names.
LAYOUT = {
    RunDir.CONFIG,
    RunDir.RUN_INFO,
    RunDir.SUMMARY,
    RunDir.METRICS,
    RunDir.CHECKPOINTS,
    RunDir.PREDICTIONS,
}


def make_run(root: Path, *checkpoints: str) -> RunDir:
    run = RunDir(root / "run")
    run.checkpoints.mkdir(parents=True)
    run.config.write_text("model: {}\n")
    for name in checkpoints:
        run.checkpoint_file(name).write_bytes(b"x")
    return run


def test_names_resolve_in_the_checkpoints_folder(tmp_path):
    run = make_run(tmp_path, "best", "last", "best-ta", "step-40")
    for name in ("best", "last", "best-ta", "step-40"):
        assert run.checkpoint(name) == run.path / "checkpoints" / f"{name}.ckpt"
    other = tmp_path / "best-elsewhere.ckpt"  # a path, though it starts like a name
    other.write_bytes(b"x")
    assert run.checkpoint(str(other)) == other
    assert resolve_checkpoint(None, str(other)) == other
    for word in ("best", "last", "best-ta", "step-40"):
        assert CHECKPOINT_NAME.fullmatch(word)
    for path in ("best-old.ckpt", "./last", "runs/x/best", "step-4.ckpt"):
        assert not CHECKPOINT_NAME.fullmatch(path)


def test_best_missing_means_last_with_a_note(tmp_path):
    run = make_run(tmp_path, "last")
    notes: list[str] = []
    assert run.checkpoint("best", notes.append) == run.checkpoint_file("last")
    assert notes == [
        f"{run.path} has no best checkpoint (it recorded no validation score): "
        f"using {run.checkpoint_file('last')}"
    ]
    assert run.default_checkpoint(notes.append) == run.checkpoint_file("last")


@pytest.mark.parametrize("request_", ["best", "last", "best-ta", "step-40"])
def test_a_missing_checkpoint_is_an_error_naming_what_the_run_saved(tmp_path, request_):
    run = make_run(tmp_path, "step-20")
    with pytest.raises(ConfigError) as err:
        run.checkpoint(request_, lambda _: pytest.fail("no note without a fallback"))
    assert str(err.value) == (
        f"{run.path}: no {request_} checkpoint ({run.checkpoint_file(request_)} is missing; "
        "checkpoints saved: step-20)"
    )


def test_nothing_falls_back_to_fresh_weights(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ConfigError, match="checkpoints saved: none"):
        run.default_checkpoint()
    with pytest.raises(ConfigError, match="is not a run directory"):
        RunDir(tmp_path / "nowhere").checkpoint("best")
    with pytest.raises(ConfigError, match=r"checkpoint .*nope.ckpt does not exist"):
        run.checkpoint(str(tmp_path / "nope.ckpt"))
    with pytest.raises(ConfigError, match="--ckpt best needs a run directory"):
        resolve_checkpoint(None, "best")


def test_layout_and_default_run_directory(tmp_path):
    run = make_run(tmp_path, "last", "best", "step-3")
    assert run.info("fit") == run.run_info
    assert run.info("test").name == "test_info.json"
    assert run.resumable_checkpoints() == [
        run.checkpoint_file("last"),
        run.checkpoint_file("step-3"),
    ]
    assert RunDir.default_for(Path("maker_configs/q.run.yaml")).path == Path("runs/q")
    assert RunDir.default_for(run.config).path == Path("runs/config")  # no run_info.json
    run.run_info.write_text("{}")
    assert RunDir.default_for(run.config).path == run.path
    assert run.is_run()


def _spelled(path: Path) -> list[str]:
    """Run-directory names spelled in ``path``'s code (docstrings aside)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in docstrings:
            continue
        text = node.value.strip("/")
        if text in LAYOUT or text.endswith(RunDir.SUFFIX) or f"/{RunDir.CHECKPOINTS}/" in text:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    return found


# A federation folder is no run directory: its own exchange files and summary (the clients'
# run directories inside it do go through RunDir).
OTHER_LAYOUTS = {
    "runtime/federated/clients.py": {"'initial.ckpt'", "'.start.ckpt'", "'.eval.ckpt'"},
    "runtime/federated/rounds.py": {"'summary.json'"},
}


def test_only_rundir_spells_the_run_directory_layout():
    """One resolver: no other module builds a run directory's paths by hand."""
    home = REPO / "runtime" / "rundir.py"
    wrong = [
        hit
        for package in ("compiler", "runtime", "scripts")
        for path in sorted((REPO / package).rglob("*.py"))
        if path != home
        for hit in _spelled(path)
        if hit.split(": ", 1)[1] not in OTHER_LAYOUTS.get(hit.split(":")[0], ())
    ]
    assert wrong == []
    assert _spelled(home)  # the checker sees the names where they are
