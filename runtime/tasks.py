"""Task definitions: what one task's outputs mean (loss, metrics, predictions, model selection).

A task receives the outputs its decoder produced for it (already sliced to its own labels when
heads are merged) and its targets from the batch (see the batch contract in the README).
Outputs carry the class/label/output dimension at dim 1: ``[B, C]`` for vector tasks,
``[B, C, T]`` or ``[B, C, H, W]`` for per-position classification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from runtime.class_weights import FrequencyWeighting, frequency_weights
from runtime.data.validate import TargetSpec
from runtime.losses import classification_loss, multilabel_loss, regression_loss
from runtime.metric_record import MetricRecord
from runtime.metrics import (
    ConfusionMatrixMetrics,
    MultiLabelMetrics,
    RegressionMetrics,
    higher_is_better,
)

IGNORE_INDEX = -100


def _names(names: list[str] | None, count: int | None, what: str) -> list[str]:
    """Label names from an explicit list or a count (then named 0..count-1)."""
    if names is None and count is None:
        raise ValueError(f"give either {what}_names or num_{what}s")
    if names is not None and count is not None and len(names) != count:
        raise ValueError(f"{what}_names has {len(names)} entries but num_{what}s is {count}")
    return [str(n) for n in names] if names is not None else [str(i) for i in range(count or 0)]


def _optional_buffer(module: nn.Module, name: str, values: list[float] | None, size: int) -> None:
    """Non-persistent buffer (moves with the module, stays out of checkpoints)."""
    if values is not None and len(values) != size:
        raise ValueError(f"{name} has {len(values)} entries, expected {size}")
    tensor = None if values is None else torch.tensor(values, dtype=torch.float32)
    module.register_buffer(name, tensor, persistent=False)


class Task(nn.Module):
    """Base class. Subclasses set ``num_outputs`` and implement loss/metrics/predict.

    Which way a metric is better is not declared here: it is the ``higher_is_better`` of the
    metric class ``make_metrics`` returns (see ``runtime.metrics``).
    """

    #: metrics that measure the task in multitask-vs-single-task comparisons (``mtl-compare``'s
    #: delta-m); empty means the task's ``primary_metric``
    comparison_metrics: tuple[str, ...] = ()
    num_outputs: int

    def __init__(self, loss_weight: float = 1.0, primary_metric: str = "accuracy") -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.primary_metric = primary_metric

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def make_metrics(self) -> Metric | MetricCollection:
        """A fresh metric (or ``MetricCollection``) whose ``compute()`` returns
        ``{metric_name: value}``."""
        raise NotImplementedError

    def higher_is_better(self, metric: str) -> bool:
        """Which way ``metric`` is better: its metric class's ``higher_is_better``."""
        return higher_is_better(self.make_metrics(), metric)

    def metric_record(self) -> MetricRecord:
        """Primary metric, comparison metrics (``comparison_metrics``, else the primary one)
        and their directions: what ``summary.json`` records for ``mtl-compare``."""
        compared = self.comparison_metrics or (self.primary_metric,)
        metrics = self.make_metrics()
        names = dict.fromkeys((self.primary_metric, *compared))
        return MetricRecord(
            self.primary_metric, tuple(compared), {n: higher_is_better(metrics, n) for n in names}
        )

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        """Human-facing predictions (probabilities, labels, values) for ``predict``."""
        raise NotImplementedError

    def target_spec(self) -> TargetSpec | None:
        """What targets this task takes, checked when data loads (None: not checked)."""
        return None

    def score(self, values: dict[str, Tensor]) -> Tensor:
        """This task's contribution to ``val/score``: its primary metric, negated where lower
        is better (so higher is better)."""
        if self.primary_metric not in values:
            raise KeyError(f"primary_metric {self.primary_metric!r} is not one of {sorted(values)}")
        value = values[self.primary_metric]
        return value if self.higher_is_better(self.primary_metric) else -value


class ClassificationTask(Task):
    """Single-label classification over ``[B, C]`` logits with int targets (-100 = missing).

    ``loss`` is ``cross_entropy`` (with ``label_smoothing`` and ``class_weights``) or
    ``focal`` (``focal_gamma``). Metrics: accuracy, macro_f1, f1_<class>. ``class_weights`` is
    one weight per class, or ``balanced`` / ``sqrt_balanced``: computed from the label
    frequencies of the training split when the data is set up (``runtime.class_weights``).
    """

    comparison_metrics = ("accuracy", "macro_f1")

    def __init__(
        self,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        loss: Literal["cross_entropy", "focal"] = "cross_entropy",
        label_smoothing: float = 0.0,
        class_weights: list[float] | FrequencyWeighting | None = None,
        focal_gamma: float = 2.0,
        loss_weight: float = 1.0,
        primary_metric: Literal["accuracy", "macro_f1"] = "accuracy",
    ) -> None:
        super().__init__(loss_weight=loss_weight, primary_metric=primary_metric)
        self.class_names = _names(class_names, num_classes, "class")
        self.num_outputs = len(self.class_names)
        self.loss_kind = loss
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.class_weights: Tensor | None
        self.class_weighting = class_weights if isinstance(class_weights, str) else None
        given = None if isinstance(class_weights, str) else class_weights
        _optional_buffer(self, "class_weights", given, self.num_outputs)

    def needs_training_labels(self) -> bool:
        return self.class_weighting is not None

    def fit_training_labels(self, labels: Tensor) -> None:
        """Class weights from the training labels' frequencies (``class_weights: balanced``);
        until then the loss is unweighted."""
        if self.class_weighting is not None:
            self.class_weights = frequency_weights(labels, self.num_outputs, self.class_weighting)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return classification_loss(
            outputs,
            target,
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
            class_weights=self.class_weights,
            focal_gamma=self.focal_gamma if self.loss_kind == "focal" else None,
        )

    def target_spec(self) -> TargetSpec:
        return TargetSpec("class", self.num_outputs)

    def make_metrics(self) -> Metric:
        return ConfusionMatrixMetrics(self.class_names, ignore_index=IGNORE_INDEX)

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        probs = torch.softmax(outputs.float(), dim=1)
        return {"label": probs.argmax(dim=1), "probs": probs}


class PerPositionClassificationTask(ClassificationTask):
    """Classification at every position: frame-wise ``[B, C, T]`` logits with ``[B, T]``
    targets, or segmentation ``[B, C, H, W]`` logits with ``[B, H, W]`` targets (-100 = ignore).
    Same losses and metrics as ``ClassificationTask``, counted over positions."""


class MultiLabelTask(Task):
    """Independent yes/no labels: ``[B, L]`` logits, float {0,1} targets (-100 = missing).

    Loss: binary cross-entropy (optional ``pos_weight``). Metrics: accuracy (per entry),
    macro_f1, f1_<label>. Compared on macro_f1 only: per-entry accuracy is dominated by the
    (usually many) negative entries.
    """

    comparison_metrics = ("macro_f1",)

    def __init__(
        self,
        label_names: list[str] | None = None,
        num_labels: int | None = None,
        pos_weight: list[float] | None = None,
        threshold: float = 0.5,
        loss_weight: float = 1.0,
        primary_metric: Literal["accuracy", "macro_f1"] = "macro_f1",
    ) -> None:
        super().__init__(loss_weight=loss_weight, primary_metric=primary_metric)
        self.label_names = _names(label_names, num_labels, "label")
        self.num_outputs = len(self.label_names)
        self.threshold = threshold
        self.pos_weight: Tensor | None
        _optional_buffer(self, "pos_weight", pos_weight, self.num_outputs)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return multilabel_loss(
            outputs, target, ignore_index=IGNORE_INDEX, pos_weight=self.pos_weight
        )

    def target_spec(self) -> TargetSpec:
        return TargetSpec("multilabel", self.num_outputs)

    def make_metrics(self) -> Metric:
        return MultiLabelMetrics(self.label_names, self.threshold, ignore_index=IGNORE_INDEX)

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        probs = torch.sigmoid(outputs.float())
        return {"labels": (probs >= self.threshold).long(), "probs": probs}


class RegressionTask(Task):
    """Real-valued targets ``[B]`` or ``[B, D]`` (NaN = missing) against ``[B, D]`` outputs.

    ``loss``: ``mse``, ``l1`` or ``huber`` (``huber_delta``). Metrics: mae, rmse (lower is
    better, so ``val/score`` counts them negated).
    """

    comparison_metrics = ("mae", "rmse")

    def __init__(
        self,
        num_outputs: int = 1,
        loss: Literal["mse", "l1", "huber"] = "mse",
        huber_delta: float = 1.0,
        loss_weight: float = 1.0,
        primary_metric: Literal["mae", "rmse"] = "mae",
    ) -> None:
        super().__init__(loss_weight=loss_weight, primary_metric=primary_metric)
        self.num_outputs = num_outputs
        self.loss_kind = loss
        self.huber_delta = huber_delta

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return regression_loss(outputs, target, kind=self.loss_kind, huber_delta=self.huber_delta)

    def target_spec(self) -> TargetSpec:
        return TargetSpec("regression", self.num_outputs)

    def make_metrics(self) -> Metric:
        return RegressionMetrics()

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        return {"value": outputs.float()}


def multitask_loss(
    tasks: Mapping[str, Task], outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The multitask training loss: ``sum(task.loss_weight * task.loss(output, target))`` over
    the tasks in ``targets`` (a batch carries the tasks of its dataset), and each task's
    unweighted loss. What ``MultiTaskModule`` optimizes, usable in a plain PyTorch loop.
    """
    if not targets:
        raise ValueError("no targets: a batch needs the labels of at least one task")
    losses = {name: tasks[name].loss(outputs[name], target) for name, target in targets.items()}
    total: Tensor | None = None
    for name, loss in losses.items():
        weighted = loss * tasks[name].loss_weight
        total = weighted if total is None else total + weighted
    assert total is not None
    return total, losses
