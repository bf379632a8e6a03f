"""Prediction files: sample index and true label beside the outputs, missing labels empty."""

from __future__ import annotations

import csv
import math

import torch
from safetensors.torch import load_file

from runtime.artifacts import write_predictions
from runtime.tasks import ClassificationTask, MultiLabelTask, RegressionTask


def batch(dataset, index, targets, outputs):
    return {
        "dataset": dataset,
        "index": torch.tensor(index),
        "targets": targets,
        "outputs": outputs,
    }


def rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_columns_carry_index_and_true_label(tmp_path):
    cls = ClassificationTask(class_names=["no", "yes"])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    batches = [
        [
            batch(
                "d",
                [4, 7],
                {"c": torch.tensor([0, -100])},
                {"c": {"label": probs[:2].argmax(1), "probs": probs[:2]}},
            )
        ],
        [
            batch(
                "d",
                [9],
                {"c": torch.tensor([1])},
                {"c": {"label": probs[2:].argmax(1), "probs": probs[2:]}},
            )
        ],
    ]
    write_predictions(tmp_path, batches, {"c": cls})
    table = rows(tmp_path / "predictions/c.csv")
    assert list(table[0]) == ["dataset", "index", "target", "label", "probs_no", "probs_yes"]
    assert [(r["index"], r["target"], r["label"]) for r in table] == [
        ("4", "0", "0"),
        ("7", "", "1"),
        ("9", "1", "1"),
    ]  # -100: a missing label, left empty
    saved = load_file(str(tmp_path / "predictions/c.safetensors"))
    assert saved["index"].tolist() == [4, 7, 9]
    assert saved["target"].tolist() == [0, -100, 1]


def test_regression_and_multilabel_targets(tmp_path):
    reg, multi = RegressionTask(num_outputs=1), MultiLabelTask(label_names=["a", "b"])
    batches = [
        batch(
            "d",
            [0, 1],
            {"r": torch.tensor([-100.0, math.nan]), "m": torch.tensor([[1.0, -100.0], [0.0, 1.0]])},
            {
                "r": {"value": torch.tensor([[0.5], [1.5]])},
                "m": {
                    "labels": torch.tensor([[1, 0], [0, 1]]),
                    "probs": torch.tensor([[0.7, 0.2], [0.1, 0.9]]),
                },
            },
        )
    ]
    write_predictions(tmp_path, batches, {"r": reg, "m": multi})
    r = rows(tmp_path / "predictions/r.csv")
    assert list(r[0]) == ["dataset", "index", "target", "value_0"]
    assert [x["target"] for x in r] == ["-100", ""]  # -100 is a real regression value
    m = rows(tmp_path / "predictions/m.csv")
    assert list(m[0]) == [
        "dataset",
        "index",
        "target_a",
        "target_b",
        "labels_a",
        "labels_b",
        "probs_a",
        "probs_b",
    ]
    assert (m[0]["target_a"], m[0]["target_b"]) == ("1", "")


def test_batches_without_index_or_targets_still_write(tmp_path):
    cls = ClassificationTask(num_classes=2)
    out = {"c": {"label": torch.tensor([1]), "probs": torch.tensor([[0.3, 0.7]])}}
    write_predictions(tmp_path, [{"dataset": "d", "outputs": out}], {"c": cls})
    assert list(rows(tmp_path / "predictions/c.csv")[0]) == [
        "dataset",
        "label",
        "probs_0",
        "probs_1",
    ]
