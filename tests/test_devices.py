"""--device on every command (spelled and refused the same way), run.float32_matmul_precision,
run.compile (checkpoints load without it), a clean CUDA out-of-memory message, and the
data module's device-dependent loader defaults. CPU-only: GPU runs are in test_gpu.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_bad_input
from merged_runs import fake_run, merged_config
from runtime_toy import toy_config
from toy_run_dir import train_toy_run

from runtime.cli import main as mtl_run
from runtime.config_errors import ConfigError
from runtime.hardware import resolve_device, trainer_device
from runtime.module import MultiTaskModule
from runtime.rundir import load_run
from scripts.evaluate import main as eval_main
from scripts.unmerge import main as unmerge_main

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("devices"), toy_config(max_epochs=1))


def invoke(command, *args: object):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cpu", "cpu"), (None, "cuda:0" if not NO_CUDA else "cpu"),
     ("auto", "cuda:0" if not NO_CUDA else "cpu")],
)  # fmt: skip
def test_device_names_resolve(name, expected):
    assert str(resolve_device(name)) == expected


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("gpu", "expected cpu, cuda, cuda:N or auto"),
        ("cpu:1", "cpu takes no index"),
        ("cuda:x", "expected cpu, cuda"),
    ],
)
def test_bad_device_names_are_config_errors(name, needle):
    with pytest.raises(ConfigError, match=needle):
        resolve_device(name)


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_refused_the_same_way_everywhere(run_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--device cuda: no CUDA device is available"):
        resolve_device("cuda")
    assert_bad_input(invoke(eval_main, run_dir, "--device", "cuda"), "no CUDA device")
    merged = fake_run(tmp_path / "merged", merged_config())
    assert_bad_input(invoke(unmerge_main, merged, "--device", "cuda"), "no CUDA device")
    assert not (merged / "unmerged").exists()
    config = run_dir.parent / "run.yaml"
    assert mtl_run(["validate", str(config), "--run-dir", str(run_dir), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    code = mtl_run([str(config), "--run-dir", str(fresh), "--trainer.accelerator=gpu"])
    assert code == 2
    assert not fresh.exists()
    assert "trainer.accelerator is 'gpu' but no CUDA device" in capsys.readouterr().err


def test_trainer_arguments_for_a_device():
    assert trainer_device(torch.device("cpu")) == {"accelerator": "cpu", "devices": 1}
    assert trainer_device(torch.device("cuda", 1)) == {"accelerator": "gpu", "devices": [1]}


def test_eval_and_run_validate_take_device_cpu(run_dir, tmp_path, capsys):
    result = invoke(eval_main, run_dir, "--device", "cpu", "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "on cpu" in result.stderr
    assert "--device" in invoke(eval_main, "--help").output
    assert_bad_input(invoke(eval_main, run_dir, "--device", "tpu"), "--device tpu")
    config = run_dir.parent / "run.yaml"
    code = mtl_run(["validate", str(config), "--run-dir", str(run_dir), "--device", "cpu",
                    "--run.float32_matmul_precision=medium"])  # fmt: skip
    try:
        assert code == 0
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    report = json.loads((run_dir / "validate_metrics.json").read_text())
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert report.keys() == evaluated.keys()
    for task, metrics in report.items():
        assert metrics == pytest.approx(evaluated[task])


def test_unmerge_checks_the_cut_models_and_writes_nothing_when_one_is_wrong(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run", merged_config())
    result = invoke(unmerge_main, run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "checked the cut models against the merged one" in result.stderr
    import scripts.task_cut

    cut = scripts.task_cut.cut_state_dict

    def broken(*args, **kwargs):
        state = cut(*args, **kwargs)
        return {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}

    monkeypatch.setattr(scripts.task_cut, "cut_state_dict", broken)
    result = invoke(unmerge_main, run, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "does not reproduce the merged model's outputs" in result.output
    assert not (tmp_path / "out").exists()


def test_out_of_memory_is_a_clean_message(tmp_path, monkeypatch, capsys):
    def no_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(MultiTaskModule, "training_step", no_memory)
    config = toy_config(max_epochs=1, trainer={"enable_progress_bar": False})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert mtl_run([str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "ran out of memory (batch sizes:" in err
    assert "bf16-mixed" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_compiled_training_leaves_checkpoints_that_load_without_compiling(tmp_path):
    config = toy_config(
        max_epochs=1,
        run={"compile": True},
        trainer={"limit_train_batches": 4, "limit_val_batches": 2},
    )
    run = train_toy_run(tmp_path, config)
    state = torch.load(run / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    loaded = load_run(run)  # an eager module: the same names, the same values
    for key, value in loaded.module.state_dict().items():
        torch.testing.assert_close(value, state[key])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["run"]["compile"] is True


def test_loader_defaults_follow_where_training_runs():
    from data_recording_model import synthetic_datamodule

    data = synthetic_datamodule()
    assert data.loader_workers() == 0
    assert data.pins_memory() is False
    data._device_hint = "cuda"  # what for_task sets for batches bound for a GPU
    assert data.pins_memory() is True
    assert data.loader_workers() >= 0
    narrowed = data.for_task("b", 7, "cuda:0")
    assert narrowed.names == ["b"]
    assert narrowed.batch_sizes == {"b": 7}
    assert narrowed.pins_memory() is True
    explicit = synthetic_datamodule(num_workers=2, pin_memory=False)
    explicit._device_hint = "cuda"
    assert explicit.loader_workers() == 2
    assert explicit.pins_memory() is False
