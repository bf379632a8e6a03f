"""Kills and full disks during ``mtl-run fit`` (CPU, subprocesses): checkpoints are written
atomically, nothing truncated or ``-v1`` is ever left, and ``--resume`` continues bit-exactly
(dropout on) after a SIGKILL mid-epoch, at the end of an epoch and while a checkpoint is being
written, and after a failed (ENOSPC/EIO) checkpoint write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from runtime_toy import toy_config, two_synthetic_datasets

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent
STEPS_PER_EPOCH = 10  # 2 datasets x 160 train samples / batch 32
EPOCHS = 2


def fault_config() -> dict:
    config = toy_config(
        max_epochs=EPOCHS,
        run={"checkpoint_every_n_steps": 3, "keep_step_checkpoints": 2, "num_threads": 1},
    )
    config["model"]["init_args"]["model"]["init_args"]["encoder"] = [
        {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 8, "hidden_sizes": [16], "dropout": 0.3},
        }
    ]
    config["data"] = two_synthetic_datasets(200)
    config["trainer"].update(
        deterministic=True, enable_progress_bar=False, accelerator="cpu", devices=1
    )
    return config


def mtl_run(
    cwd: Path, *args: str, fault: tuple[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = (
        [sys.executable, str(TESTS / "fault_inject.py"), *fault]
        if fault
        else [sys.executable, "-m", "runtime.cli"]
    )
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == EPOCHS * STEPS_PER_EPOCH
    return ckpt["state_dict"]


def assert_clean(run_dir: Path) -> None:
    """Every checkpoint loads, none is versioned, no temporary is left."""
    folder = run_dir / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "-v" in n or n.startswith(".")], names
    for name in names:
        torch.load(folder / name, weights_only=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    (root / "run.yaml").write_text(yaml.safe_dump(fault_config()))
    done = mtl_run(root, "run.yaml", "--run-dir", "reference")
    assert done.returncode == 0, done.stderr
    return root


KILLS = {
    "mid-epoch": ("kill-after", "step-15.ckpt#1"),  # epoch 2: steps 11-20
    "end-of-epoch": ("kill-after", "last.ckpt#1"),  # after epoch 1's validation
    "while-writing-last": ("kill-in-write", "last.ckpt#2"),
    "while-writing-step": ("kill-in-write", "step-18.ckpt#1"),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_sigkill_then_resume_is_exact_and_keeps_the_file_names(workdir, case):
    run_dir = workdir / case
    killed = mtl_run(workdir, "run.yaml", "--run-dir", case, fault=KILLS[case])
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    if KILLS[case][0] == "kill-in-write":
        assert [n for n in left if n.endswith(".tmp")], left  # the cut-short temporary only
    resumed = mtl_run(workdir, "run.yaml", "--run-dir", case, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_clean(run_dir)
    reference, result = weights(workdir / "reference"), weights(run_dir)
    assert reference.keys() == result.keys()
    for key in reference:
        assert torch.equal(reference[key], result[key]), key


@pytest.mark.parametrize("mode", ["enospc"])
def test_a_failed_checkpoint_write_is_a_clean_error_then_resumes(workdir, mode):
    run_dir = workdir / mode
    failed = mtl_run(workdir, "run.yaml", "--run-dir", mode, fault=(mode, "last.ckpt#2"))
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "No space left on device" in failed.stderr
    assert "last.ckpt" in failed.stderr
    assert "--resume" in failed.stderr
    assert_clean(run_dir)  # the first last.ckpt is intact, no temporary left
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
    resumed = mtl_run(workdir, "run.yaml", "--run-dir", mode, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_clean(run_dir)
    assert {p.name for p in (run_dir / "checkpoints").glob("best*")} == {"best.ckpt"}


def test_sigterm_saves_a_resumable_checkpoint_and_says_how_to_resume(workdir):
    run_dir = workdir / "sigterm"
    stopped = mtl_run(
        workdir, "run.yaml", "--run-dir", "sigterm", fault=("sigterm-after", "step-6.ckpt#1")
    )
    assert stopped.returncode == 143, stopped.stderr
    assert "terminated (SIGTERM)" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "mtl-run run.yaml --run-dir sigterm --resume" in stopped.stderr
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 6  # saved at the step the signal arrived in
    resumed = mtl_run(workdir, "run.yaml", "--run-dir", "sigterm", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_clean(run_dir)
    reference, result = weights(workdir / "reference"), weights(run_dir)
    assert all(torch.equal(reference[k], result[k]) for k in reference)


def test_ctrl_c_exits_130(workdir):
    stopped = mtl_run(
        workdir, "run.yaml", "--run-dir", "sigint", fault=("sigint-after", "step-3.ckpt#1")
    )
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted (Ctrl-C)" in stopped.stderr
    assert "--resume" in stopped.stderr
    assert_clean(workdir / "sigint")
