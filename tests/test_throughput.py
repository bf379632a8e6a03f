"""mtl-throughput on CPU (``--device cpu``, so the tests mean CPU on a GPU machine too): rows
and JSON, per-row peak memory in fresh processes, timing statistics, the run's own loss and
optimizer in train mode, inputs (real ones through the run's DataLoader), exit-2 refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_bad_input
from runtime_toy import ToyDataModule, toy_config
from toy_run_dir import train_toy_run

from runtime.rundir import load_run
from scripts.bench_inputs import gather_samples, loader_batches, synthetic_batch
from scripts.bench_row import (
    RowSpec,
    _train_step,
    measure_safely,
    run_optimizer,
    summarize,
    time_steps,
)
from scripts.throughput import main, table

ROW_KEYS = {
    "mode",
    "batch_size",
    "dtype",
    "task",
    "samples_per_s",
    "ms_p50",
    "ms_p90",
    "peak_mem_mb",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("bench"), toy_config(max_epochs=1))


def bench(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def bench_cpu(*args: object):
    return bench(*args, "--device", "cpu")


def test_rows_table_and_json_for_a_run_directory(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = bench_cpu(
        run_dir,
        "--batch-sizes",
        "2,8",
        "--mode",
        "both",
        "--task",
        "ta",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "best.ckpt" in result.output
    assert "samples/s" in result.output
    rows = json.loads(out.read_text())
    assert [(r["mode"], r["batch_size"]) for r in rows] == [
        ("infer", 2),
        ("infer", 8),
        ("train", 2),
        ("train", 8),
    ]
    params = sum(p.numel() for p in load_run(run_dir, with_data=False).module.parameters())
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["error"] is None
        assert row["task"] == "ta"
        assert row["dtype"] == "float32"
        assert row["device"] == "cpu"
        assert 0 < row["ms_p50"] <= row["ms_p90"]
        assert row["samples_per_s"] == pytest.approx(row["batch_size"] * 1000 / row["ms_p50"])
        assert row["peak_mem_kind"] == "process_peak_rss"
        assert row["peak_mem_mb"] >= row["base_mem_mb"] > 0
        assert row["total_params"] == row["trainable_params"] == params
        assert row["input_shape"] == [8]
        assert row["inputs"] == "synthetic"
    assert bench_cpu(run_dir, "--json", out, "--task", "ta").exit_code == 2  # no --force


def test_each_row_measures_its_own_peak_memory(run_dir, tmp_path):
    """A large batch first, then a small one: the small row must not inherit the peak."""
    out = tmp_path / "rows.json"
    result = bench_cpu(
        run_dir,
        "--batch-sizes",
        "400000,1",
        "--mode",
        "train",
        "--task",
        "tb",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--json",
        out,
    )
    assert result.exit_code == 0, result.output
    big, small = json.loads(out.read_text())
    assert big["peak_mem_mb"] - big["base_mem_mb"] > 40  # inputs alone are 12.8 MB
    assert small["peak_mem_mb"] < big["peak_mem_mb"] - 30


def test_config_file_uses_random_weights_and_real_data(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config()))
    result = bench_cpu(
        config,
        "--batch-sizes",
        "200",
        "--mode",
        "infer",
        "--real-data",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--dtype",
        "bfloat16",
        "--threads",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "random weights" in result.output
    assert "inputs: real" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("infer  tb"))
    assert line.split()[2:4] == ["200", "bfloat16"]


def test_config_file_with_an_explicit_checkpoint(run_dir):
    result = bench_cpu(
        run_dir.parent / "run.yaml",
        "--ckpt",
        run_dir / "checkpoints/last.ckpt",
        "--task",
        "ta",
        "--batch-sizes",
        "4",
        "--mode",
        "infer",
        "--iters",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "last.ckpt) on cpu" in result.output


def test_timing_warms_up_untimed_and_reports_median_and_p90():
    calls = []
    times = time_steps(calls.append, warmup=3, iters=5, device=torch.device("cpu"))
    assert calls == list(range(8))
    assert len(times) == 5
    stats = summarize([i / 1000 for i in range(1, 11)], batch_size=4)  # 1..10 ms
    assert stats["ms_p50"] == pytest.approx(5.5)
    assert stats["ms_p90"] == pytest.approx(9.1)
    assert stats["samples_per_s"] == pytest.approx(4 / 0.0055)


def test_train_step_uses_the_task_loss_and_the_run_optimizer(run_dir):
    module = load_run(run_dir, with_data=False).module
    optimizer = run_optimizer(module)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)  # toy config's lr
    seen = []
    task = module.tasks["ta"]
    original = task.loss
    task.loss = lambda out, target: seen.append(out.shape) or original(out, target)
    batch = {
        "dataset": "a",
        "inputs": torch.randn(4, 8),
        "targets": {"ta": torch.tensor([0, 1, 2, 0])},
    }
    spec = RowSpec("x", None, "train", "ta", 4, "float32", "cpu", False, 0, 1, None, False)
    before = [p.detach().clone() for p in module.parameters()]
    step = _train_step(module, batch, "ta", spec, torch.device("cpu"))
    step(0)
    step(1)
    assert seen == [(4, 3), (4, 3)]  # the merged head's slice for ta, by the task's loss
    changed = [not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True)]
    assert all(changed)


def test_inputs_follow_the_data_modules_shapes_and_label_values():
    dm = ToyDataModule({"a": ["ta"], "b": ["tb", "tc"]}, num_classes={"tc": 5})
    samples = gather_samples(dm, ["ta", "tc"], needed=200)
    assert set(samples["tc"]["targets"]) == {"tc"}  # only the row's task
    assert len(samples["ta"]["inputs"]) == 144  # the whole training split: fewer than needed
    real = loader_batches(dm, "ta", 48, "cpu")  # its own loader as configured, endlessly
    seen = [next(real) for _ in range(10)]  # 144 rows: 9 batches of 16 a pass, then again
    assert all(set(b["targets"]) == {"ta"} and len(b["inputs"]) == 16 for b in seen)
    assert torch.equal(seen[9]["inputs"], seen[0]["inputs"])
    fake = synthetic_batch(samples["tc"], 64)
    assert fake["inputs"].shape == (64, 8)
    assert fake["inputs"].dtype == torch.float32
    assert not torch.isin(fake["inputs"], samples["tc"]["inputs"]).any()  # drawn, not copied
    assert set(fake["targets"]["tc"].tolist()) <= set(samples["tc"]["targets"]["tc"].tolist())
    assert fake["targets"]["tc"].dtype == torch.int64


def test_refusals_exit_2_before_any_row(run_dir):
    assert_bad_input(
        bench_cpu(run_dir, "--dtype", "float16", "--mode", "train"),
        "float16 training is not supported on CPU",
    )
    assert_bad_input(bench_cpu(run_dir, "--dtype", "float16", "--mode", "both"), "--dtype bfloat16")
    if not torch.cuda.is_available():
        assert_bad_input(bench(run_dir, "--device", "cuda"), "no CUDA device")
    assert_bad_input(bench(run_dir, "--task", "tx"), "no such task", "its tasks: ta, tb")
    assert_bad_input(bench(run_dir, "--batch-sizes", "4,0"), "--batch-sizes")
    assert_bad_input(bench(run_dir, "--device", "tpu"), "--device tpu")
    assert_bad_input(bench(run_dir, "--mode", "serve"), "'serve' is not one of")
    assert_bad_input(bench(run_dir / "nope"), "no such run directory")
    assert_bad_input(bench(run_dir, "--ckpt", "last.ckpt"), "last.ckpt does not exist")
    assert_bad_input(
        bench(run_dir.parent / "run.yaml", "--ckpt", "best"), "--ckpt best needs a run directory"
    )


def test_a_failing_row_is_reported_not_raised(tmp_path):
    spec = RowSpec(
        str(tmp_path / "gone.yaml"),
        None,
        "infer",
        "ta",
        4,
        "float32",
        "cpu",
        False,
        0,
        1,
        None,
        False,
    )
    sample = {"dataset": "a", "inputs": torch.randn(2, 8), "targets": {"ta": torch.zeros(2)}}
    row = measure_safely(spec, sample)
    assert row["error"].startswith("ConfigError")
    assert "gone.yaml" in row["error"]
    assert row["batch_size"] == 4
    assert "samples_per_s" not in row
    lines = table([row]).splitlines()
    assert lines[1].split()[:4] == ["infer", "ta", "4", "float32"]
    assert lines[1].endswith(row["error"])
    assert "-" in lines[1].split()


def test_real_data_comes_through_the_runs_own_loader_at_the_row_batch_size():
    from data_recording_model import synthetic_datamodule

    data = synthetic_datamodule(num_workers=1)
    batches = loader_batches(data, "b", 7, "cpu")  # only dataset b, 7 rows, one worker
    first = [next(batches) for _ in range(3)]
    assert {b["dataset"] for b in first} == {"b"}
    assert [len(b["inputs"]) for b in first] == [7, 7, 7]
    assert all(set(b["targets"]) == {"b"} for b in first)
