"""Every file a command writes gets ``0666 & ~umask`` (folders ``0777 & ~umask``), whatever
library produced it: run directories, predictions, each export format, unmerged runs, JSON
reports (CPU, in-process)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from runtime_toy import toy_config

from runtime.cli import main as mtl_run
from scripts.ckpt_convert import main as ckpt_convert
from scripts.evaluate import main as evaluate
from scripts.unmerge import main as unmerge


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o027
    os.umask(previous)


def modes_under(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]
    }


def test_everything_written_gets_the_users_normal_mode(tmp_path, umask_027, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("toy.yaml").write_text(yaml.safe_dump(toy_config(max_epochs=1)))
    assert mtl_run(["toy.yaml", "--run-dir", "run"]) == 0
    for sub in ("validate", "test", "predict"):
        assert mtl_run([sub, "run/config.yaml", "--run-dir", "run"]) == 0
    runner = CliRunner()
    for fmt in ("torch", "safetensors", "dcp"):
        for part in ("encoder", "model"):
            result = runner.invoke(
                ckpt_convert, ["run", "--to", fmt, "--part", part, "-o", f"exports/{fmt}-{part}"]
            )
            assert result.exit_code == 0, result.output
    result = runner.invoke(unmerge, ["run", "-o", "unmerged"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(evaluate, ["run", "--json", "reports/eval.json"])
    assert result.exit_code == 0, result.output

    modes = modes_under(tmp_path)
    files = {k: m for k, m in modes.items() if not (tmp_path / k).is_dir() and k != "toy.yaml"}
    folders = {k: m for k, m in modes.items() if (tmp_path / k).is_dir() and k != "."}
    for suffix in (
        ".safetensors",
        ".pt",
        ".distcp",
        ".ckpt",
        ".json",
        ".csv",
        ".png",
        ".yaml",
        ".lock",
    ):
        assert any(k.endswith(suffix) for k in files), suffix  # every kind is covered
    assert {k: oct(m) for k, m in files.items() if m != 0o640} == {}
    assert {k: oct(m) for k, m in folders.items() if m != 0o750} == {}
