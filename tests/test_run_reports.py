"""The pieces a run's reports are made of, each on its own: the validation history callback
(``runtime.history``), provenance (``runtime.provenance``), the JSON reports
(``runtime.artifacts``) and the figures (``runtime.plots``). CPU only."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from runtime.artifacts import absent_metrics, per_task_report, write_summary
from runtime.history import ValidationHistory
from runtime.plots import plot_confusion_matrix, plot_task_weights
from runtime.provenance import git_commit, header_comments, package_versions, run_info
from runtime.tasks import ClassificationTask, RegressionTask

PNG = b"\x89PNG\r\n\x1a\n"


def _trainer(epoch: int, step: int, metrics: dict, fn: str = "fit", sanity: bool = False):
    return SimpleNamespace(
        sanity_checking=sanity,
        state=SimpleNamespace(fn=fn),
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        current_epoch=epoch,
        global_step=step,
    )


def test_history_keeps_fit_validations_and_finds_the_best_one():
    history = ValidationHistory()
    module = SimpleNamespace(confusion_matrices={"val": {"t": torch.tensor([[2, 0], [1, 1]])}})
    history.on_validation_end(_trainer(0, 0, {"val/score": 0.1}, sanity=True), module)
    history.on_validation_end(_trainer(0, 5, {"val/score": 0.9}, fn="validate"), module)
    history.on_validation_end(_trainer(0, 10, {"val/score": 0.5, "train/loss": 1.0}), module)
    history.on_validation_end(_trainer(1, 20, {"val/score": 0.75}), module)
    assert [e["step"] for e in history.entries] == [10, 20]  # no sanity check, no validate
    assert history.entries[0]["metrics"] == {"val/score": 0.5}
    assert history.entries[0]["confusion"] == {"t": [[2, 0], [1, 1]]}
    assert history.best("val/score", "max", 0.75)["step"] == 20
    assert history.best("val/score", "max", 0.3) is None
    assert history.best("val/score", "max", None) is None
    resumed = ValidationHistory()
    resumed.load_state_dict(history.state_dict())
    assert resumed.entries == history.entries


def test_provenance_reads_the_header_hashes_and_the_git_state(tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text(f"# made by hand\n# sha256 {'ab' * 32} data/a.yaml\n\nmodel: {{}}\n# late\n")
    assert header_comments(config) == {
        "header": ["# made by hand", f"# sha256 {'ab' * 32} data/a.yaml"],
        "inputs": [{"sha256": "ab" * 32, "path": "data/a.yaml"}],
    }
    assert git_commit(tmp_path) is None  # not a checkout
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "run.yaml"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    clean = git_commit(tmp_path)
    assert clean is not None
    assert len(clean["commit"]) == 40
    assert clean["dirty"] is False
    config.write_text("model: {}\n")
    assert git_commit(tmp_path)["dirty"] is True
    versions = package_versions()
    assert {"python", "torch", "lightning"} <= set(versions)
    info = run_info(["fit", "run.yaml"], "fit", config, 7)
    assert info["seed"] == 7
    assert info["command"][1:] == ["fit", "run.yaml"]
    assert info["versions"] == versions
    assert info["header"] == []


def test_summary_holds_figures_and_each_tasks_metric_record(tmp_path: Path):
    tasks = {"c": ClassificationTask(num_classes=2), "r": RegressionTask()}
    figures = {
        "c": {"accuracy": 0.5, "macro_f1": math.nan, "epoch": 1, "step": 4},
        "r": absent_metrics(tasks["r"]),
    }
    assert figures["r"] == {"mae": None, "rmse": None}
    path = tmp_path / "summary.json"
    write_summary(path, figures, tasks)
    summary = json.loads(path.read_text())  # strict JSON: NaN became null
    assert summary["c"] == {
        "accuracy": 0.5,
        "macro_f1": None,
        "epoch": 1,
        "step": 4,
        "primary_metric": "accuracy",
        "comparison_metrics": ["accuracy", "macro_f1"],
        "higher_is_better": {"accuracy": True, "macro_f1": True},
    }
    assert summary["r"]["higher_is_better"] == {"mae": False, "rmse": False}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left
    logged = {"val/c/accuracy": 0.5, "val/c/f1_0": 0.1, "test/c/accuracy": 0.2, "val/score": 1}
    assert per_task_report(logged, "val", ["c", "r"]) == {
        "c": {"accuracy": 0.5, "f1_0": 0.1},
        "r": {},
    }


def test_figures_are_pngs_written_whole(tmp_path: Path):
    plot_confusion_matrix([[3, 1], [0, 2]], ["cat", "dog"], tmp_path / "cm.png", "t")
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG
    assert plot_task_weights(tmp_path) is None  # no metrics.csv
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,1,0.5\n")
    assert plot_task_weights(tmp_path) is None  # no balancer weights logged
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/weight/a,train/weight/b\n0,1,0.5,1.5\n0,2,0.6,1.4\n0,3,,\n"
    )
    out = plot_task_weights(tmp_path)
    assert out == tmp_path / "task_weights.png"
    assert out.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cm.png",
        "metrics.csv",
        "task_weights.png",
    ]


@pytest.mark.parametrize("counts", [[[0, 0], [0, 0]], [[5]]])
def test_confusion_matrix_of_empty_or_single_class(tmp_path: Path, counts):
    names = [str(i) for i in range(len(counts))]
    plot_confusion_matrix(counts, names, tmp_path / "cm.png", "edge")
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG
