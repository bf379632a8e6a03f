"""benchmarks/gpu_check.sh: its refusals, and a whole CPU dry run (every step at smoke size)
that must pass and print one summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def check(*args: object, timeout: int = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The script with this interpreter, given relative to ``cwd`` when that is set (steps
    run in the output folder, so a relative --python must still work)."""
    python = Path(sys.executable)
    if cwd is not None:
        python = Path(os.path.relpath(python, cwd))
    return subprocess.run(["bash", str(SCRIPT), "--python", str(python), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)  # fmt: skip


def test_bad_arguments_exit_2(tmp_path):
    done = check("--bogus")
    assert done.returncode == 2
    assert "unknown argument '--bogus'" in done.stderr
    done = check("--wheels", tmp_path / "none")
    assert done.returncode == 2
    assert "is not a directory" in done.stderr
    assert check("--help").returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_without_a_gpu_it_says_so_and_runs_nothing(tmp_path):
    done = check("--out", tmp_path)
    assert done.returncode == 2
    assert "no CUDA GPU is visible" in done.stderr
    assert "--cpu-dry-run" in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cpu_dry_run_passes_every_step_and_prints_one_summary(tmp_path):
    done = check("--cpu-dry-run", "--out", tmp_path / "out", timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary in done.stdout
    for name in (
        "tests",
        "quickstart",
        "tput-float32",
        "tput-bfloat16",
        "tput-compiled",
        "overhead-fp32",
        "overhead-bf16",
    ):
        assert any(line.split()[:2] == [name, "PASS"] for line in summary.splitlines()), name
    assert "Per-task results" in summary
    assert "bare/mtl-run" in summary
    assert summary.rstrip().splitlines()[-1].startswith("gpu_check: PASSED")
    assert not (tmp_path / "out" / "pydeps").exists()  # everything was already installed
