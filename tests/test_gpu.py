"""On a CUDA GPU (skipped without one): the quickstart trains there, bf16-mixed trains,
training steps never sync with the host, mtl-throughput measures on cuda with and without
--compile, and mtl-eval scores there with the figures it gives on CPU.

``benchmarks/gpu_check.sh`` runs these with the rest of the suite on a GPU machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from runtime_toy import toy_config
from toy_run_dir import train_toy_run

from runtime.cli import main as mtl_run
from runtime.module import MultiTaskModule
from scripts.evaluate import main as eval_main
from scripts.throughput import main as throughput_main

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _gpu_config(**trainer) -> dict:
    config = toy_config(max_epochs=2, trainer={"accelerator": "gpu", "devices": 1, **trainer})
    config["run"]["num_threads"] = None
    return config


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("gpu"), _gpu_config())


def test_quickstart_trains_on_the_gpu(tmp_path):
    config = tmp_path / "quickstart.run.yaml"
    subprocess.run([sys.executable, "-m", "compiler", str(REPO / "maker_configs/quickstart.yaml"),
                    "-o", str(config), "-q"], check=True, timeout=60)  # fmt: skip
    run_dir = tmp_path / "qs"
    code = mtl_run([str(config), "--device", "cuda", "--trainer.max_epochs=3",
                    "--trainer.enable_progress_bar=false", "--run-dir", str(run_dir)])  # fmt: skip
    assert code == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["accelerator"] == "gpu"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"digits_low", "digits_high", "parity"}
    assert all(task["accuracy"] > 0.8 for task in summary.values())


def test_bf16_mixed_training_gives_finite_losses(tmp_path):
    run_dir = train_toy_run(tmp_path, _gpu_config(precision="bf16-mixed"))
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    column = header.index("train/loss_epoch")
    losses = [float(r.split(",")[column]) for r in rows[1:] if r.split(",")[column]]
    assert len(losses) == 2
    assert all(math.isfinite(v) for v in losses)
    assert losses[1] < losses[0]


def test_training_steps_never_wait_for_the_gpu(tmp_path, monkeypatch):
    step = MultiTaskModule.training_step

    def strict(self, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("error")  # any host sync raises
        try:
            return step(self, batch, batch_idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(MultiTaskModule, "training_step", strict)
    train_toy_run(tmp_path, _gpu_config())


@pytest.mark.parametrize("compile_", [False, True])
def test_throughput_on_cuda(gpu_run, tmp_path, compile_):
    out = tmp_path / "rows.json"
    args = [
        str(gpu_run),
        "--device",
        "cuda",
        "--batch-sizes",
        "4,64",
        "--task",
        "ta",
        "--iters",
        "5",
        "--warmup",
        "3",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(throughput_main, args + (["--compile"] if compile_ else []))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert len(rows) == 4
    assert all(r["error"] is None for r in rows)
    assert all(r["device"].startswith("cuda") and r["compile"] is compile_ for r in rows)
    assert all(r["peak_mem_kind"] == "cuda_allocator_peak" and r["peak_mem_mb"] > 0
               for r in rows)  # fmt: skip


def test_throughput_real_data_on_cuda(gpu_run):
    args = [
        str(gpu_run),
        "--device",
        "cuda",
        "--real-data",
        "--batch-sizes",
        "16",
        "--mode",
        "train",
        "--iters",
        "5",
        "--warmup",
        "2",
    ]
    result = CliRunner().invoke(throughput_main, args)
    assert result.exit_code == 0, result.output
    assert "inputs: real" in result.output


def test_eval_on_the_gpu_matches_cpu(gpu_run, tmp_path):
    reports = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"{device}.json"
        result = CliRunner().invoke(
            eval_main, [str(gpu_run), "--device", device, "--json", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert f"on {device}" in result.stderr
        reports[device] = json.loads(out.read_text())
    assert reports["cuda"].keys() == reports["cpu"].keys()
    for task, metrics in reports["cpu"].items():
        assert reports["cuda"][task] == pytest.approx(metrics, rel=1e-4, abs=1e-5)
