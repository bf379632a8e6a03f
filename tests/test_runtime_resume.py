"""A run SIGKILLed mid-epoch after a step checkpoint and continued with ``--resume`` ends with
the same weights as an uninterrupted run (deterministic settings, real data modules)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from runtime_toy import toy_config, two_synthetic_datasets

STEPS_PER_EPOCH = 20  # 2 datasets x 320 train samples / batch 32


def resume_config() -> dict:
    config = toy_config(
        max_epochs=2, run={"checkpoint_every_n_steps": 3, "keep_step_checkpoints": -1}
    )
    config["model"]["init_args"]["model"]["init_args"]["encoder"] = [
        {
            "class_path": "runtime_toy.SlowEncoder",
            "init_args": {"in_features": 8, "out_features": 16, "sleep_s": 0.04},
        }
    ]
    config["model"]["init_args"]["ema_decay"] = 0.9
    config["data"] = two_synthetic_datasets(400)
    config["trainer"].update(deterministic=True, enable_progress_bar=False)
    return config


def mtl_run(*args: str, cwd: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * STEPS_PER_EPOCH
    return {
        **ckpt["state_dict"],
        **{f"train:{k}": v for k, v in ckpt["ema_training_weights"].items()},
    }


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(resume_config()))
    victim = mtl_run("run.yaml", "--run-dir", "killed", cwd=tmp_path)
    reference = None
    try:
        target = tmp_path / "killed/checkpoints/step-27.ckpt"  # mid epoch 2 (steps 21-40)
        deadline = time.monotonic() + 120
        while not target.exists():
            assert victim.poll() is None, victim.stdout.read()
            assert time.monotonic() < deadline, "no step checkpoint in time"
            time.sleep(0.01)
        time.sleep(0.1)  # a step or two past the checkpoint
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        reference = mtl_run("run.yaml", "--run-dir", "reference", cwd=tmp_path)
        resumed = mtl_run("run.yaml", "--run-dir", "killed", "--resume", cwd=tmp_path)
        out, _ = resumed.communicate(timeout=240)
        assert resumed.returncode == 0, out
        ref_out, _ = reference.communicate(timeout=240)
        assert reference.returncode == 0, ref_out
    finally:
        for proc in (victim, reference):
            if proc is not None and proc.poll() is None:
                proc.kill()
    last = torch.load(tmp_path / "killed/checkpoints/step-27.ckpt", weights_only=True)
    assert last["global_step"] % STEPS_PER_EPOCH != 0  # really mid-epoch
    got, want = final_weights(tmp_path / "killed"), final_weights(tmp_path / "reference")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
