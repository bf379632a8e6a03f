"""Every command's own command line: -h/--help, --version, mtl-run's short help and usage,
and the refusals mtl-run answers before it imports Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = (
    "mtl-make-config",
    "mtl-run",
    "mtl-task-embeds",
    "mtl-unmerge",
    "mtl-eval",
    "mtl-compare",
    "mtl-throughput",
    "mtl-ckpt-convert",
    "mtl-study",
)


def command(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help(name, flag):
    done = command(name, flag)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower()
    assert "----" not in done.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_version(name):
    from importlib.metadata import version

    done = command(name, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{name} {version('mtl-toolkit')}"


def test_the_version_is_written_once():
    """compiler/_version.py holds the version; pyproject.toml and the metadata read it there."""
    import tomllib
    from importlib.metadata import version

    from helpers import REPO

    import compiler

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "compiler/_version.py"
    assert version("mtl-toolkit") == compiler.__version__
    literal = f'"{compiler.__version__}"'
    sources = [p for d in ("compiler", "runtime", "scripts") for p in (REPO / d).rglob("*.py")]
    spelled = [p.relative_to(REPO).as_posix() for p in sources if literal in p.read_text()]
    assert spelled == ["compiler/_version.py"]


def test_mtl_run_help_is_short_and_says_where_the_rest_is():
    text = command("mtl-run", "--help").stdout
    lines = text.splitlines()
    assert len(lines) <= 45
    assert lines[0].startswith("usage: mtl-run")
    assert "RUN.yaml" in lines[0]
    for needed in (
        "fit",
        "validate",
        "test",
        "predict",
        "--run-dir",
        "--resume",
        "--force",
        "--check",
        "mtl-run fit --help",
    ):
        assert needed in text


def test_mtl_run_without_arguments_prints_the_usage_and_exits_2():
    done = command("mtl-run")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: mtl-run")
    assert "RUN.yaml" in done.stderr


@pytest.mark.slow
def test_the_full_option_list_shows_run_yaml_and_no_four_dash_flags():
    done = command("mtl-run", "fit", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: mtl-run fit RUN.yaml")
    assert "----" not in done.stdout
    assert "--no_resume" in done.stdout
    assert "--trainer.max_epochs" in done.stdout
    assert "--run.tensorboard" in done.stdout
    # Group titles are whole sentences of ours, not Lightning docstrings cut mid-sentence.
    titles = [
        line
        for line in done.stdout.splitlines()
        if line and not line[0].isspace() and line.endswith(":")
    ]
    assert "The data (data: section; class_path and init_args):" in titles
    assert not [t for t in titles if t.endswith("is:") or "<class" in t]


PROBE = """
import sys
from runtime.entry import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "lightning", "jsonargparse") if m in sys.modules)
print(code, ",".join(heavy) or "-")
"""


def refuse_light(cwd: Path, *argv: str) -> str:
    """Run mtl-run's front door; assert exit 2 without torch/Lightning; return stderr."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["2", "-"], (done.stdout, done.stderr)
    assert done.stderr.startswith("mtl-run: error: ")
    assert "Traceback" not in done.stderr
    return done.stderr


def test_refusals_that_need_no_model_come_before_lightning(tmp_path):
    (tmp_path / "qs.run.yaml").write_text("trainer: {max_epochs: 1}\n")
    assert "missing.yaml: no such run config" in refuse_light(tmp_path, "missing.yaml")
    assert "missing.yaml" in refuse_light(tmp_path, "validate", "missing.yaml")
    (tmp_path / "runs/qs").mkdir(parents=True)
    (tmp_path / "runs/qs/run_info.json").write_text(json.dumps({}))
    err = refuse_light(tmp_path, "qs.run.yaml")
    assert "runs/qs already exists" in err
    assert "--resume" in err
    assert "--force" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other/x").write_text("")
    assert "other already exists" in refuse_light(tmp_path, "qs.run.yaml", "--run-dir=other")
    err = refuse_light(tmp_path, "qs.run.yaml", "--resmue")
    assert "unknown option '--resmue'" in err
    assert "did you mean '--resume'" in err
    assert "'--epochs'" in refuse_light(tmp_path, "fit", "qs.run.yaml", "--epochs", "3")
    assert "is a directory" in refuse_light(tmp_path, "runs/qs")
    assert "missing RUN.yaml" in refuse_light(tmp_path, "fit")


def test_overrides_and_run_options_pass_the_front_door(tmp_path):
    from runtime.entry import UsageError, precheck

    (tmp_path / "qs.yaml").write_text("{}\n")
    config = str(tmp_path / "qs.yaml")
    precheck(
        [
            config,
            "--trainer.max_epochs=2",
            "--model.init_args.lr",
            "0.1",
            "--run.num_threads",
            "1",
            "--seed_everything=3",
            "--print_config",
            "--no_resume",
            "--check",
        ]
    )
    precheck(["predict", "-c", config, "--ckpt_path", "x.ckpt"])
    (tmp_path / "runs/qs").mkdir(parents=True)
    (tmp_path / "runs/qs/a").write_text("")
    for ok in (["--resume"], ["--force"], ["--check"], ["--run-dir", str(tmp_path / "new")]):
        precheck([config, "--run-dir", str(tmp_path / "runs/qs"), *ok])
    with pytest.raises(UsageError, match="already exists"):
        precheck([config, "--run_dir", str(tmp_path / "runs/qs")])


@pytest.mark.parametrize(
    ("given", "refused"),
    [("0.5", False), ("1e-3", False), ("nan", True), ("inf", True), ("-inf", True),
     ("1e309", True), ("0", True), ("-2", True), ("x", True)],
)  # fmt: skip
def test_float_options_refuse_nan_and_infinities(given, refused):
    """``scripts.common.FiniteFloat`` (--lr, --alpha, --mem-gb, ...): click's FloatRange lets
    NaN through every bound, since NaN compares false."""
    import click
    from click.testing import CliRunner

    from scripts.common import FiniteFloat

    @click.command()
    @click.option("--lr", type=FiniteFloat(0, min_open=True), required=True)
    def command(lr: float) -> None:
        click.echo(f"lr={lr}")

    result = CliRunner().invoke(command, ["--lr", given])
    assert result.exit_code == (2 if refused else 0), result.output
    if not refused:
        assert result.output == f"lr={float(given)}\n"
