"""mtl-unmerge: every label-merged head type gives single-task runs whose probabilities equal
the merged model's renormalized slice; the outputs are ordinary run directories; bad input
exits 2 and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_bad_input
from merged_runs import KINDS, LAYOUT, fake_run, merged_config, write_checkpoint
from torch import nn

from runtime.model import MultiTaskModel
from runtime.rundir import load_run
from scripts.task_cut import TaskCut, cut_state_dict
from scripts.unmerge import main

TASKS = [t for tasks in LAYOUT.values() for t in tasks]


def unmerge(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def _probabilities(kind: str, outputs: torch.Tensor) -> torch.Tensor:
    """What the task reports as probabilities (values for regression)."""
    if kind == "multilabel":
        return torch.sigmoid(outputs)
    if kind == "regression":
        return outputs
    return torch.softmax(outputs, dim=1)


def _renormalized_slice(kind: str, full: torch.Tensor, offset: int, width: int) -> torch.Tensor:
    """The merged model's probabilities over all its outputs, cut to a task's labels and
    renormalized over them."""
    probs = _probabilities(kind, full).narrow(1, offset, width)
    return (
        probs / probs.sum(dim=1, keepdim=True)
        if kind not in ("multilabel", "regression")
        else probs
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_unmerged_probabilities_equal_the_merged_renormalized_slice(tmp_path, kind):
    run_dir = fake_run(tmp_path / "run", merged_config(kind))
    result = unmerge(run_dir)
    assert result.exit_code == 0, result.output
    merged = load_run(run_dir, "best")
    merged.datamodule.setup("validate")
    offsets = merged.config["model"]["init_args"]["model"]["init_args"]["task_label_offsets"]
    for task in TASKS:
        single = load_run(run_dir / "unmerged" / task, "best")
        assert single.module.model.task_names == [task]
        single.datamodule.setup("validate")
        assert single.datamodule.dataset_tasks == {
            d: [task] for d, ts in LAYOUT.items() if task in ts
        }
        offset, width = offsets[task]["offset"], offsets[task]["num_outputs"]
        checked = 0
        with torch.no_grad():
            for batch in merged.datamodule.val_dataloader():
                if task not in batch["targets"]:
                    continue
                features = merged.module.model.encode(batch["inputs"], task)
                full = merged.module.model.decoders["Merged"](features)
                expected = _renormalized_slice(kind, full, offset, width)
                out = single.module(batch["inputs"], [task])[task]
                predicted = single.module.tasks[task].predict(out)
                got = predicted.get("probs", predicted.get("value"))
                assert got.shape == expected.shape
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
                checked += len(got)
        assert checked > 0


def test_unmerged_dir_is_a_run_directory_for_mtl_run(tmp_path, capsys, monkeypatch):
    from runtime.cli import main as mtl_run

    run_dir = fake_run(tmp_path / "run", merged_config())
    out = tmp_path / "parts"
    result = unmerge(run_dir, "--task", "tb", "-o", out, "--ckpt", "last")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["tb"]
    part = out / "tb"
    config = yaml.safe_load((part / "config.yaml").read_text())
    model_args = config["model"]["init_args"]["model"]["init_args"]
    assert list(model_args["decoders"]) == ["tb"]
    assert model_args["decoders"]["tb"][-1]["init_args"]["num_outputs"] == 2
    assert "decoder_to_target" not in model_args
    assert "task_label_offsets" not in model_args
    assert list(config["model"]["init_args"]["tasks"]) == ["tb"]
    data = config["data"]["init_args"]
    assert list(data["data_modules"]) == ["ds_a"]
    assert data["dataset_tasks"] == {"ds_a": ["tb"]}
    info = json.loads((part / "run_info.json").read_text())
    assert info["unmerged_from"]["task"] == "tb"
    assert info["unmerged_from"]["checkpoint"] == str((run_dir / "checkpoints/last.ckpt").resolve())
    ckpt = torch.load(part / "checkpoints/last.ckpt", weights_only=True)
    assert "optimizer_states" not in ckpt
    assert ckpt["state_dict"]["model.decoders.tb.0.net.0.weight"].shape == (2, 8)
    merged_w = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(
        ckpt["state_dict"]["model.decoders.tb.0.net.0.weight"],
        merged_w["model.decoders.Merged.0.net.0.weight"][3:5],
    )
    torch.testing.assert_close(
        ckpt["state_dict"]["model.encoder.0.net.0.weight"], merged_w["model.encoder.0.net.0.weight"]
    )

    monkeypatch.chdir(tmp_path)
    assert mtl_run(["validate", str(part / "config.yaml")]) == 0
    assert set(json.loads((part / "validate_metrics.json").read_text())) == {"tb"}
    assert mtl_run(["predict", str(part / "config.yaml")]) == 0
    assert (part / "predictions" / "tb.csv").exists()
    capsys.readouterr()


def test_per_task_tensors_keep_the_rows_of_the_kept_task():
    """A module declaring ``per_task_parameters`` (e.g. a task-embedding table) is cut to the
    kept task's row, whatever else the model holds."""

    class TaskTable(nn.Module):
        per_task_parameters = ("table", "counts")

        def __init__(self, num_tasks: int) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(num_tasks, 4))
            self.register_buffer("counts", torch.arange(num_tasks, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    old, new = nn.Module(), nn.Module()
    old.model = MultiTaskModel(
        [nn.Linear(4, 4)],
        {"Merged": [nn.Linear(4, 6)]},
        TaskTable(3),
        decoder_to_target={"Merged": ["x", "y", "z"]},
        task_label_offsets={
            "x": {"offset": 0, "num_outputs": 2},
            "y": {"offset": 2, "num_outputs": 3},
            "z": {"offset": 5, "num_outputs": 1},
        },
    )
    new.model = MultiTaskModel([nn.Linear(4, 4)], {"y": [nn.Linear(4, 3)]}, TaskTable(1))
    cut = TaskCut("y", "Merged", 2, 3, 6, ["d"])
    state = cut_state_dict(old.state_dict(), old.model, new, cut)
    new.load_state_dict(state)
    torch.testing.assert_close(new.model.trunk.table, old.model.trunk.table[1:2])
    assert new.model.trunk.counts.tolist() == [1.0]
    torch.testing.assert_close(
        new.model.decoders["y"][0].weight, old.model.decoders["Merged"][0].weight[2:5]
    )


# ---- bad input --------------------------------------------------------------------------------
@pytest.fixture
def merged_run(tmp_path) -> Path:
    return fake_run(tmp_path / "run", merged_config())


def _nothing_written(run_dir: Path) -> None:
    assert not (run_dir / "unmerged").exists()


def test_run_without_merged_heads_is_refused(tmp_path):
    run_dir = fake_run(tmp_path / "plain", merged_config(merged=False))
    assert_bad_input(unmerge(run_dir), "has no merged heads", str(run_dir))
    _nothing_written(run_dir)


def test_unknown_task_is_refused(merged_run):
    assert_bad_input(
        unmerge(merged_run, "--task", "tbb"), "--task tbb", "did you mean 'tb'", "ta, tb, tc"
    )
    _nothing_written(merged_run)


def test_missing_checkpoint_is_refused(merged_run):
    for name in ("best.ckpt", "last.ckpt"):  # best alone missing means last.ckpt
        (merged_run / "checkpoints" / name).unlink()
    assert_bad_input(unmerge(merged_run), "no best checkpoint", "checkpoints saved: none")
    assert_bad_input(
        unmerge(merged_run, "--ckpt", merged_run / "nope.ckpt"), "nope.ckpt does not exist"
    )
    _nothing_written(merged_run)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_corrupt_checkpoint_is_refused(merged_run, content):
    (merged_run / "checkpoints" / "best.ckpt").write_bytes(content)
    assert_bad_input(unmerge(merged_run), "best.ckpt: not a loadable checkpoint")
    _nothing_written(merged_run)


def test_checkpoint_of_another_model_is_refused(merged_run, tmp_path):
    write_checkpoint(merged_run / "checkpoints" / "best.ckpt", {"model.other": torch.zeros(1)})
    assert_bad_input(unmerge(merged_run), "does not fit the model")
    _nothing_written(merged_run)


def test_not_a_run_directory_is_refused(tmp_path):
    assert_bad_input(unmerge(tmp_path / "missing"), "no such run directory")
    (tmp_path / "empty").mkdir()
    assert_bad_input(unmerge(tmp_path / "empty"), "is not a run directory")


def test_existing_output_needs_force(merged_run):
    out = merged_run / "unmerged"
    (out / "tc").mkdir(parents=True)
    (out / "tc" / "keep.txt").write_text("mine")
    assert_bad_input(unmerge(merged_run), "unmerged/tc already exists", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["tc"]  # ta, tb not written either
    result = unmerge(merged_run, "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == TASKS
    assert not (out / "tc" / "keep.txt").exists()
    assert (out / "tc" / "checkpoints" / "best.ckpt").exists()


def test_help_shows_examples():
    result = unmerge("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--force" in result.output
