"""Per-task metrics as torchmetrics ``Metric`` states that update without host syncs.

Every update is a fixed-size scatter/sum on the device (no boolean indexing, no ``.item()``),
so metrics cost nothing on the host per step; ``compute`` runs once per epoch and syncs across
processes through torchmetrics' ``dist_reduce_fx``. Keyword arguments of torchmetrics'
``Metric`` (``sync_on_compute``, ``dist_sync_fn``, ...) pass through.

Which way a metric is better is declared once, by torchmetrics' own ``higher_is_better`` of
the metric class (every value a class computes goes the same way); tasks, ``val/score``,
per-task checkpoints and ``summary.json`` read it through :func:`higher_is_better`. Values that
go different ways come from different classes, combined in a ``MetricCollection``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection


def members(metrics: Metric | MetricCollection) -> list[Metric]:
    """The metric objects of a task's metrics (a single ``Metric`` or a collection)."""
    if isinstance(metrics, MetricCollection):
        return list(metrics.values(copy_state=False))
    return [metrics]


def was_updated(metrics: Metric | MetricCollection) -> bool:
    """Whether any batch reached these metrics since the last reset."""
    return any(m.update_count > 0 for m in members(metrics))


def higher_is_better(metrics: Metric | MetricCollection, name: str) -> bool:
    """Direction of the value ``name`` that ``metrics.compute()`` returns: the
    ``higher_is_better`` of the metric class computing it. In a collection that is the member
    called ``name`` or, for the values of dict-returning members, the direction all members
    share."""
    if isinstance(metrics, MetricCollection):
        by_name = dict(metrics.items(keep_base=True, copy_state=False))
        if name in by_name:
            return higher_is_better(by_name[name], name)
        found = {higher_is_better(m, name) for m in by_name.values()}
        if len(found) != 1:
            raise ValueError(
                f"metric {name!r}: the members of the collection go different ways; name "
                "the member after the value it computes"
            )
        return found.pop()
    if metrics.higher_is_better is None:
        raise ValueError(
            f"{type(metrics).__name__} does not say which way is better: set its class "
            "attribute higher_is_better (torchmetrics' Metric) to True or False"
        )
    return bool(metrics.higher_is_better)


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """F1 per class; a class with no predictions and no targets scores 0 (zero division)."""
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(denom))


class ConfusionMatrixMetrics(Metric):
    """Accuracy, macro-F1 and per-class F1 of single-label predictions, from a confusion matrix.

    ``update(logits, target)`` takes logits ``[B, C, ...]`` (class dim 1) and class indices
    ``[B, ...]``; targets equal to ``ignore_index`` (or out of range) are not counted.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, class_names: list[str], ignore_index: int = -100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        size = self.num_classes * self.num_classes + 1  # last bin swallows ignored targets
        self.add_state("counts", default=torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        n = self.num_classes
        preds = logits.argmax(dim=1).reshape(-1)
        target = target.reshape(-1).long()
        valid = (target >= 0) & (target < n)
        index = torch.where(valid, target * n + preds, torch.full_like(target, n * n))
        self.counts.index_add_(0, index, torch.ones_like(index))

    @property
    def confusion_matrix(self) -> Tensor:
        """``[true, predicted]`` counts accumulated so far."""
        n = self.num_classes
        return self.counts[: n * n].view(n, n)

    def compute(self) -> dict[str, Tensor]:
        """The metrics; empty when no target was counted (all missing): absent, not 0."""
        if not bool(self.confusion_matrix.sum() > 0):
            return {}
        cm = self.confusion_matrix.double()
        tp = cm.diagonal()
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        f1 = _f1(tp, fp, fn)
        present = (cm.sum(0) + cm.sum(1)) > 0
        out = {
            "accuracy": tp.sum() / cm.sum().clamp(min=1),
            "macro_f1": (f1 * present).sum() / present.sum().clamp(min=1),
        }
        for name, value in zip(self.class_names, f1, strict=True):
            out[f"f1_{name}"] = value
        return {k: v.float() for k, v in out.items()}


class MultiLabelMetrics(Metric):
    """Element accuracy, macro-F1 and per-label F1 of thresholded multi-label outputs.

    ``update(logits, target)``: logits ``[B, L]``, float targets in {0, 1}; entries equal to
    ``ignore_index`` are masked.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        label_names: list[str],
        threshold: float = 0.5,
        ignore_index: int = -100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        self.threshold = threshold
        self.ignore_index = ignore_index
        n = len(self.label_names)
        for state in ("tp", "fp", "fn", "tn"):
            self.add_state(state, default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        valid = target != self.ignore_index
        pred = torch.sigmoid(logits) >= self.threshold
        true = target > 0.5
        self.tp += (valid & pred & true).sum(0)
        self.fp += (valid & pred & ~true).sum(0)
        self.fn += (valid & ~pred & true).sum(0)
        self.tn += (valid & ~pred & ~true).sum(0)

    def compute(self) -> dict[str, Tensor]:
        """The metrics; empty when no entry was counted (all missing): absent, not 0."""
        tp, fp, fn, tn = (s.double() for s in (self.tp, self.fp, self.fn, self.tn))
        if not bool((tp + fp + fn + tn).sum() > 0):
            return {}
        f1 = _f1(tp, fp, fn)
        out = {
            "accuracy": (tp + tn).sum() / (tp + fp + fn + tn).sum().clamp(min=1),
            "macro_f1": f1.mean(),
        }
        for name, value in zip(self.label_names, f1, strict=True):
            out[f"f1_{name}"] = value
        return {k: v.float() for k, v in out.items()}


class RegressionMetrics(Metric):
    """MAE and RMSE over all non-NaN target entries (missing labels are NaN)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("abs_sum", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("sq_sum", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        target = target.reshape(preds.shape)
        valid = ~torch.isnan(target)
        diff = torch.where(valid, preds.detach() - target, torch.zeros_like(preds)).double()
        self.abs_sum += diff.abs().sum()
        self.sq_sum += diff.square().sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, Tensor]:
        """MAE and RMSE; empty when no target was counted (all missing): absent, not 0."""
        if not bool(self.count > 0):
            return {}
        count = self.count.clamp(min=1)
        return {
            "mae": (self.abs_sum / count).float(),
            "rmse": (self.sq_sum / count).sqrt().float(),
        }
