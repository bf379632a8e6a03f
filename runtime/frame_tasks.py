"""Frame-wise tasks: per-frame classification scored by segments, and masked per-frame
regression (keypoints, poses, any ``D`` values per frame).

Outputs carry their class/output dimension at dim 1 like every task's (``[B, C, T]``, from
``runtime.heads.PerPositionClassificationHead`` / ``PerPositionRegressionHead``); targets keep
time first: ``[B, T]`` class ids (-100 = unlabelled frame) and ``[B, T, D]`` values where NaN
marks a missing value (an occluded keypoint, a padded frame), which loss and metrics skip.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor
from torchmetrics import Metric

from runtime.class_weights import FrequencyWeighting
from runtime.data.validate import TargetSpec
from runtime.losses import regression_loss
from runtime.metrics import RegressionMetrics
from runtime.segment_metrics import STANDARD_OVERLAPS, FrameClassificationMetrics, overlap_name
from runtime.tasks import IGNORE_INDEX, PerPositionClassificationTask, RegressionTask

_COMPARED_OVERLAP = 0.5


class FrameClassificationTask(PerPositionClassificationTask):
    """Frame-wise classification (``[B, C, T]`` logits, ``[B, T]`` targets) with the
    action-segmentation metrics: frame accuracy, macro and per-class F1, and segment F1 at
    each of ``segment_overlaps`` (``seg_f1_10``, ``seg_f1_25``, ``seg_f1_50``; F1@50 is
    always computed: ``mtl-compare`` compares on it).

    Losses as ``ClassificationTask`` (cross-entropy or focal, label smoothing, class weights
    given or ``balanced`` from the training labels), counted per frame.
    ``background_classes`` names classes whose segments are not scored.
    """

    comparison_metrics = ("accuracy", "macro_f1", overlap_name(_COMPARED_OVERLAP))

    def __init__(
        self,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        loss: Literal["cross_entropy", "focal"] = "cross_entropy",
        label_smoothing: float = 0.0,
        class_weights: list[float] | FrequencyWeighting | None = None,
        focal_gamma: float = 2.0,
        segment_overlaps: list[float] | None = None,
        background_classes: list[str] | None = None,
        loss_weight: float = 1.0,
        primary_metric: str = "macro_f1",
    ) -> None:
        super().__init__(
            class_names=class_names,
            num_classes=num_classes,
            loss=loss,
            label_smoothing=label_smoothing,
            class_weights=class_weights,
            focal_gamma=focal_gamma,
            loss_weight=loss_weight,
        )
        overlaps = list(STANDARD_OVERLAPS if segment_overlaps is None else segment_overlaps)
        if any(not 0.0 < o <= 1.0 for o in overlaps):
            raise ValueError(f"segment_overlaps must lie in (0, 1], got {overlaps}")
        if _COMPARED_OVERLAP not in overlaps:
            overlaps.append(_COMPARED_OVERLAP)
        self.segment_overlaps = sorted(set(overlaps))
        unknown = [c for c in background_classes or [] if c not in self.class_names]
        if unknown:
            raise ValueError(
                f"background_classes {unknown} are not among the class names {self.class_names}"
            )
        self.background = [self.class_names.index(c) for c in background_classes or []]
        metrics = ["accuracy", "macro_f1", *map(overlap_name, self.segment_overlaps)]
        if primary_metric not in metrics:
            raise ValueError(f"primary_metric must be one of {metrics}, got {primary_metric!r}")
        self.primary_metric = primary_metric

    def make_metrics(self) -> Metric:
        return FrameClassificationMetrics(
            self.class_names, self.segment_overlaps, self.background, ignore_index=IGNORE_INDEX
        )


class FrameRegressionTask(RegressionTask):
    """Per-frame real values: ``[B, D, T]`` outputs against ``[B, T, D]`` targets (``[B, T]``
    when ``num_outputs`` is 1); NaN entries (missing keypoints, padded frames) count in
    neither the loss nor the metrics.

    Options as ``RegressionTask``: ``loss`` ``mse``, ``l1`` or ``huber`` (``huber_delta``),
    averaged over the present entries; metrics mae, rmse over the present entries (lower is
    better).
    """

    @staticmethod
    def _outputs_first(target: Tensor) -> Tensor:
        """``[B, T, D]`` (or ``[B, T]``) targets laid out like the outputs, ``[B, D, T]``."""
        return target.unsqueeze(1) if target.dim() == 2 else target.movedim(-1, 1)

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return regression_loss(
            outputs, self._outputs_first(target), kind=self.loss_kind, huber_delta=self.huber_delta
        )

    def target_spec(self) -> TargetSpec:
        return TargetSpec("regression", self.num_outputs, per_position=True)

    def make_metrics(self) -> Metric:
        return _FrameRegressionMetrics()

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        return {"value": outputs.float().movedim(1, -1)}


class _FrameRegressionMetrics(RegressionMetrics):
    """MAE/RMSE of ``[B, D, T]`` outputs against time-first ``[B, T, D]`` targets."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds, FrameRegressionTask._outputs_first(target))
