"""What a run prints: useful lines only (no advertisements, no FLOPs table line, no
resume noise), and the optional TensorBoard logger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from runtime_toy import toy_config

TESTS = Path(__file__).resolve().parent
NOISE = (
    "Tip:",
    "litlogger",
    "FLOPs",
    "sync_dist",
    "exists and is not empty",
    "estimate number of stepping batches",
)


def mtl_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_a_run_and_its_resume_print_no_noise_and_log_to_tensorboard(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(
        yaml.safe_dump(
            toy_config(
                max_epochs=1, trainer={"enable_progress_bar": False, "enable_model_summary": None}
            )
        )
    )
    first = mtl_run(tmp_path, "toy.yaml", "--run.tensorboard=true")
    resumed = mtl_run(
        tmp_path, "toy.yaml", "--resume", "--trainer.max_epochs=2", "--run.tensorboard=true"
    )
    for done in (first, resumed):
        printed = done.stdout + done.stderr
        assert not [n for n in NOISE if n in printed], printed
        assert "parameters (" in done.stderr
        assert "trainable)" in done.stderr
        assert done.stdout.strip().splitlines()[-1] == "runs/toy"
    events = list((tmp_path / "runs/toy/tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2  # one file per attempt, in the same folder
    assert (tmp_path / "runs/toy/metrics.csv").exists()  # the CSV log is always kept
