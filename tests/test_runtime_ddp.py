"""2-process CPU DDP through ``mtl-run`` itself (a subprocess with a timeout: Lightning
re-launches the command for rank 1, which must not trip over rank 0's run directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MTL_RUN = [sys.executable, "-m", "runtime"]


@pytest.mark.skipif(os.environ.get("MTL_SKIP_DDP") == "1", reason="MTL_SKIP_DDP=1")
def test_ddp_fit_gives_per_task_metrics_over_the_whole_validation_set(tmp_path):
    config = tmp_path / "qs.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compiler",
            str(REPO / "maker_configs/quickstart.yaml"),
            "-o",
            str(config),
            "-q",
        ],
        check=True,
        timeout=60,
    )
    run_dir = tmp_path / "ddp"
    fit = subprocess.run(
        [
            *MTL_RUN,
            "fit",
            str(config),
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert fit.stdout.strip().splitlines()[-1] == str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"digits_low", "digits_high", "parity"}
    # Single-process validation of the same checkpoint sees every validation sample once:
    # DDP's per-task metrics must equal it, so ranks were synced and nothing was duplicated.
    validate = subprocess.run(
        [*MTL_RUN, "validate", str(run_dir / "config.yaml"), "--trainer.enable_progress_bar=false"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert validate.returncode == 0, validate.stderr[-3000:]
    single = json.loads((run_dir / "validate_metrics.json").read_text())
    for task, metrics in summary.items():
        for name in ("accuracy", "macro_f1"):
            assert metrics[name] == pytest.approx(single[task][name], abs=1e-6), (task, name)
