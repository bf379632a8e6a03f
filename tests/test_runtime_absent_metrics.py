"""Issue 12, item 8: a task with no labelled validation sample has absent metrics (null in
``summary.json``, never 0.0); a run where no dataset has a validation split is refused at
``--check`` and ``fit``; ``summary.json`` is strict JSON (no NaN). CPU only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from file_run import synthetic_config

from compiler.files import write_json
from runtime.cli import main
from runtime.metrics import ConfusionMatrixMetrics, MultiLabelMetrics, RegressionMetrics


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("metric", "logits", "target"),
    [
        (ConfusionMatrixMetrics(["a", "b"]), torch.randn(4, 2), torch.full((4,), -100)),
        (MultiLabelMetrics(["a", "b"]), torch.randn(4, 2), torch.full((4, 2), -100.0)),
        (RegressionMetrics(), torch.randn(4, 1), torch.full((4,), float("nan"))),
    ],
)
def test_metrics_of_all_missing_targets_are_absent_not_zero(metric, logits, target):
    metric.update(logits, target)
    assert metric.compute() == {}


def test_reports_are_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"t": {"loss": float("nan"), "mae": float("inf"), "n": 1}})
    assert _strict((tmp_path / "r.json").read_text()) == {"t": {"loss": None, "mae": None, "n": 1}}


def test_dataset_too_small_for_validation_is_reported_and_its_task_is_null(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    config = synthetic_config({"a": {"num_samples": 64}, "b": {"num_samples": 4}})
    Path("mix.yaml").write_text(yaml.safe_dump(config))
    assert main(["fit", "mix.yaml"]) == 0
    err = capsys.readouterr().err
    assert "no validation samples in 'b'" in err
    assert "tb" in err
    summary = _strict(Path("runs/mix/summary.json").read_text())
    assert summary["tb"]["accuracy"] is None
    assert summary["tb"]["macro_f1"] is None
    assert isinstance(summary["ta"]["accuracy"], float)
    assert Path("runs/mix/checkpoints/best.ckpt").is_file()


def test_no_validation_split_at_all_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    Path("tiny.yaml").write_text(yaml.safe_dump(synthetic_config({"a": {"num_samples": 4}})))
    for args in (["--check", "tiny.yaml"], ["fit", "tiny.yaml"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "no dataset has validation samples" in err
        assert "'a' 4 train / 0 val" in err
    assert not Path("runs").exists()


def test_a_task_without_any_label_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = synthetic_config({"a": {"num_samples": 64, "missing_fraction": 1.0}})
    Path("nolabels.yaml").write_text(yaml.safe_dump(config))
    assert main(["--check", "nolabels.yaml"]) == 2
    err = capsys.readouterr().err
    assert "task 'ta'" in err
    assert "none of the" in err
    assert "has a label" in err
