"""Balancers across processes: two CPU (gloo) DDP ranks apply the same update, equal to one
process that sees both ranks' batches; a run SIGKILLed mid-epoch and resumed ends bit-identical
to an uninterrupted one with a stateful balancer (uncertainty weighting, FAMO, DWA, NashMTL)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_runtime_resume import mtl_run, resume_config

STEPS_PER_EPOCH = 10  # all_datasets: 320 train samples / global batch 32, both datasets


def balanced_config(balancer: dict[str, Any], batch: int = 32) -> dict[str, Any]:
    config = resume_config()
    data = config["data"]["init_args"]
    data["sample_mode"] = "all_datasets"
    data["batch_sizes"] = {"a": batch, "b": batch}
    config["model"]["init_args"]["balancer"] = balancer
    return config


def flat(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor (and number) of a nested checkpoint entry, by path."""
    if isinstance(value, dict):
        out: dict[str, torch.Tensor] = {}
        for key, item in value.items():
            out.update(flat(item, f"{prefix}/{key}"))
        return out
    if isinstance(value, (list, tuple)):
        return flat(dict(enumerate(value)), prefix)
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    if isinstance(value, (int, float, bool)):
        return {prefix: torch.tensor(value)}
    return {}


#: stateful balancers: learned parameters (Uncertainty), an internal optimizer (FAMO), epoch
#: loss history read from the step statistics (DWA), a solver's warm start and step counter
#: kept outside state_dict (torchjd's NashMTL)
STATEFUL = {
    "Uncertainty": {"class_path": "runtime.balancing.Uncertainty"},
    "FAMO": {"class_path": "runtime.balancing.FAMO"},
    "DWA": {"class_path": "runtime.balancing.DWA"},
    "NashMTL": {
        "class_path": "runtime.balancing.Aggregate",
        "init_args": {
            "aggregator": {
                "class_path": "torchjd.aggregation.NashMTL",
                "init_args": {"n_tasks": 2},
            }
        },
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("balancer", list(STATEFUL))
def test_sigkill_then_resume_is_bit_identical_with_a_stateful_balancer(tmp_path, balancer):
    if balancer == "NashMTL" and importlib.util.find_spec("cvxpy") is None:
        pytest.skip("cvxpy missing (pip install 'mtl-toolkit[balancing]')")
    config = balanced_config(STATEFUL[balancer])
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    victim = mtl_run("run.yaml", "--run-dir", "killed", cwd=tmp_path)
    reference = None
    try:
        target = tmp_path / "killed/checkpoints/step-15.ckpt"  # mid epoch 2 (steps 10-19)
        deadline = time.monotonic() + 180
        while not target.exists():
            assert victim.poll() is None, victim.stdout.read()
            assert time.monotonic() < deadline, "no step checkpoint in time"
            time.sleep(0.01)
        time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        reference = mtl_run("run.yaml", "--run-dir", "reference", cwd=tmp_path)
        resumed = mtl_run("run.yaml", "--run-dir", "killed", "--resume", cwd=tmp_path)
        out, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, out
        ref_out, _ = reference.communicate(timeout=300)
        assert reference.returncode == 0, ref_out
    finally:
        for proc in (victim, reference):
            if proc is not None and proc.poll() is None:
                proc.kill()
    got, want = (
        torch.load(tmp_path / d / "checkpoints/last.ckpt", weights_only=True)
        for d in ("killed", "reference")
    )
    assert want["global_step"] == 2 * STEPS_PER_EPOCH
    got_state = flat({"state": got["state_dict"], "ema": got["ema_training_weights"]})
    want_state = flat({"state": want["state_dict"], "ema": want["ema_training_weights"]})
    assert got_state.keys() == want_state.keys()
    assert any(k.startswith("/state/balancer.") for k in want_state)  # its state is saved
    for key in want_state:
        torch.testing.assert_close(got_state[key], want_state[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MTL_SKIP_DDP") == "1", reason="MTL_SKIP_DDP=1")
def test_gradient_method_under_ddp_matches_one_process_seeing_both_batches(tmp_path: Path):
    aggregator = {
        "class_path": "runtime.balancing.Aggregate",
        "init_args": {"aggregator": {"class_path": "torchjd.aggregation.MGDA"}},
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    for name, batch, devices in (("ddp", 16, 2), ("single", 32, 1)):
        config = balanced_config(aggregator, batch)
        config["trainer"].update(
            max_steps=6,
            devices=devices,
            accelerator="cpu",
            limit_val_batches=1,
            strategy="ddp" if devices > 1 else "auto",
            deterministic=False,
            callbacks=[
                {
                    "class_path": "balancing_ddp.SaveRankWeights",
                    "init_args": {"folder": str(tmp_path / f"{name}-weights")},
                }
            ],
        )
        config["model"]["init_args"]["model"]["init_args"]["encoder"] = [
            {
                "class_path": "runtime.encoders.MLPEncoder",
                "init_args": {"in_features": 8, "hidden_sizes": [16]},
            }
        ]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [sys.executable, "-m", "runtime.cli", f"{name}.yaml", "--run-dir", name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"ddp-weights/rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = torch.load(tmp_path / "single-weights/rank0.pt", weights_only=True)
    start = torch.load(tmp_path / "single/checkpoints/last.ckpt", weights_only=True)
    assert start["global_step"] == 6
    for key, value in single.items():
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
