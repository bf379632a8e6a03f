"""Every output flag of every command refuses a directory where a file goes (and a file where
a directory goes) with exit 2, before any work, and leaves what was there untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import deny_write
from merged_runs import fake_run, merged_config
from runtime_toy import toy_config

from runtime.cli import main as mtl_run
from scripts.ckpt_convert import main as ckpt_convert
from scripts.compare import main as compare
from scripts.evaluate import main as evaluate
from scripts.task_embeds import main as task_embeds
from scripts.throughput import main as throughput
from scripts.unmerge import main as unmerge


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """An existing directory with content that a wrong output flag must not destroy."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    return folder


@pytest.fixture
def victim_file(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text("keep")
    return path


def invoke(command, *args: object):
    return CliRunner().invoke(command, [str(a) for a in args])


def assert_refused(result, name: str) -> None:
    assert result.exit_code == 2, result.output
    assert name in result.output
    assert "Traceback" not in result.output


# (command, arguments before the output flag, output flag, extra arguments)
FILE_FLAGS = [
    (evaluate, ["RUN"], "--json", []),
    (compare, ["RUN"], "--json", ["--baseline", "B"]),
    (throughput, ["RUN"], "--json", []),
    (throughput, ["RUN"], "--json", ["--force"]),
    (task_embeds, ["SRC", "-o", "FRESH.safetensors"], "--dump-texts", []),
    (task_embeds, ["SRC", "-o", "FRESH.safetensors"], "--plot", []),
    (task_embeds, ["SRC"], "-o", []),
    (task_embeds, ["SRC"], "-o", ["--force"]),
]


@pytest.mark.parametrize(("command", "before", "flag", "extra"), FILE_FLAGS)
def test_a_directory_where_a_file_goes_is_refused(tmp_path, victim, command, before, flag, extra):
    args = [str(tmp_path / a) if a.isupper() or "." in a else a for a in before]
    result = invoke(command, *args, flag, victim, *extra)
    assert_refused(result, str(victim))
    assert "directory" in result.output
    assert (victim / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


@pytest.fixture(scope="module")
def merged_run(tmp_path_factory) -> Path:
    return fake_run(tmp_path_factory.mktemp("runs") / "merged", merged_config())


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_ckpt_convert_refuses_a_file_where_its_output_folder_goes(merged_run, victim_file, force):
    result = invoke(ckpt_convert, merged_run, "--to", "torch", "-o", victim_file, *force)
    assert_refused(result, str(victim_file))
    assert victim_file.read_text() == "keep"


def test_unmerge_refuses_a_file_where_its_output_folder_goes(merged_run, victim_file):
    result = invoke(unmerge, merged_run, "-o", victim_file)
    assert_refused(result, str(victim_file))
    assert victim_file.read_text() == "keep"


def test_unmerge_refuses_a_file_where_a_task_folder_goes(merged_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    task = merged_config()["data"]["init_args"]["dataset_tasks"]
    name = next(iter(next(iter(task.values()))))
    (out / name).write_text("keep")
    result = invoke(unmerge, merged_run, "-o", out, "--force")
    assert_refused(result, str(out / name))
    assert (out / name).read_text() == "keep"


def test_eval_json_onto_its_own_run_directory_keeps_the_run(merged_run):
    before = sorted(p.name for p in merged_run.rglob("*"))
    result = invoke(evaluate, merged_run, "--json", merged_run)
    assert_refused(result, str(merged_run))
    assert sorted(p.name for p in merged_run.rglob("*")) == before


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_mtl_run_refuses_a_run_dir_that_is_a_file(tmp_path, victim_file, capsys, subcommand):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(toy_config()))
    code = mtl_run([subcommand, str(config), "--run-dir", str(victim_file)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(victim_file) in err
    assert "not a directory" in err
    assert "Traceback" not in err
    assert victim_file.read_text() == "keep"


def test_mtl_make_config_refuses_a_directory_as_its_output(tmp_path, victim):
    from compiler.cli import main as make_config

    result = invoke(make_config, tmp_path / "maker.yaml", "-o", victim)
    assert result.exit_code == 2, result.output
    assert (victim / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("subcommand", "output"),
    [
        ("validate", "validate_metrics.json"),
        ("test", "test_metrics.json"),
        ("predict", "predictions"),
    ],
)
def test_mtl_run_refuses_a_wrong_kind_of_output_inside_the_run_dir(
    tmp_path, capsys, subcommand, output
):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(toy_config()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    blocker = run_dir / output
    blocker.mkdir() if output.endswith(".json") else blocker.write_text("keep")
    code = mtl_run([subcommand, str(config), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(blocker) in err
    assert "Traceback" not in err
    assert blocker.exists()
    assert not (run_dir / f"{subcommand}_info.json").exists()


def test_unmerge_refuses_a_read_only_run_directory(merged_run, monkeypatch):
    """(Read-only as ``os.access`` reports it, also where tests run as root.)"""
    deny_write(monkeypatch, merged_run)
    result = invoke(unmerge, merged_run)
    assert_refused(result, str(merged_run))
    assert "not writable" in result.output
    assert not (merged_run / "unmerged").exists()
