"""The sensing suite end to end at smoke size: maker -> run (confusion matrices per task) ->
mtl-unmerge keeping the chosen task's adapters; bad adapter settings exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from compiler.build import compile_maker
from runtime.cli import main as run_main
from scripts.ckpt_convert import main as convert_main
from scripts.unmerge import main as unmerge_main

REPO = Path(__file__).resolve().parents[1]
SMOKE = [
    "num_samples=60",
    "seq_len=32",
    "num_subcarriers=12",
    "d_model=16",
    "num_layers=1",
    "max_epochs=1",
    "batch_size=16",
]
FLAGS = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ADAPTER_TASKS = "model.init_args.model.init_args.task_adapters.init_args.tasks"


def compiled(tmp_path: Path, *sets: str) -> Path:
    out = compile_maker(
        REPO / "maker_configs/sensing.yaml",
        sets=[*SMOKE, *sets],
        output=tmp_path / "run.yaml",
    )
    out.output_path.write_text(out.text())
    return out.output_path


@pytest.mark.slow
def test_suite_trains_reports_and_unmerges_with_the_tasks_adapters(tmp_path: Path) -> None:
    config = compiled(tmp_path, f"{ADAPTER_TASKS}=[activity, identity]")
    run_dir = tmp_path / "run"
    assert run_main([str(config), "--run-dir", str(run_dir), *FLAGS]) == 0
    for task in ("motion_source", "activity", "identity"):
        assert (run_dir / f"confusion_matrix_{task}.png").stat().st_size > 0

    result = CliRunner().invoke(
        unmerge_main, [str(run_dir), "--task", "activity", "--task", "motion_source"]
    )
    assert result.exit_code == 0, result.output
    for task, kept in (("activity", ["activity"]), ("motion_source", [])):
        cut = run_dir / "unmerged" / task
        args = yaml.safe_load((cut / "config.yaml").read_text())["model"]["init_args"]
        assert args["model"]["init_args"]["task_adapters"]["init_args"]["tasks"] == kept
        state = torch.load(cut / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
        owners = {k.split(".")[3] for k in state if k.startswith("model.task_adapters.adapters.")}
        assert owners == set(kept)
    full = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    cut = torch.load(
        run_dir / "unmerged" / "activity" / "checkpoints" / "best.ckpt", weights_only=True
    )["state_dict"]
    name = "model.task_adapters.adapters.activity.0.up.weight"
    assert torch.equal(cut[name], full[name])

    # an encoder export says that the adapters are not in it
    result = CliRunner().invoke(
        convert_main, [str(run_dir), "--to", "torch", "-o", str(tmp_path / "export")]
    )
    assert result.exit_code == 0, result.output
    assert "per-task adapters live beside the encoder" in result.output


def test_bad_adapter_setting_exits_2_naming_it(tmp_path: Path, capsys) -> None:
    config = compiled(tmp_path, "adapter_bottleneck=0")
    assert run_main([str(config), "--run-dir", str(tmp_path / "run"), *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "bottleneck must be >= 1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
