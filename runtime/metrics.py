"""Per-task metrics as torchmetrics ``Metric`` states that update without host syncs.

Every update is a fixed-size scatter/sum on the device (no boolean indexing, no ``.item()``),
so metrics cost nothing on the host per step; ``compute`` runs once per epoch and syncs across
processes through torchmetrics' ``dist_reduce_fx``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


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

    def __init__(self, label_names: list[str], threshold: float = 0.5, ignore_index: int = -100):
        super().__init__()
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

    def __init__(self) -> None:
        super().__init__()
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
