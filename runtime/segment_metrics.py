"""Segment-level F1@k of frame-wise predictions, the action-segmentation standard.

A *segment* is a maximal run of frames with one label. A predicted segment is a true positive
when its IoU with a ground-truth segment of the same label reaches the overlap threshold
``k`` and that ground-truth segment is not matched yet (the one of highest IoU is tried);
every other predicted segment is a false positive and every unmatched ground-truth segment a
false negative (Lea et al. 2017, as computed by MS-TCN). Unlike frame accuracy it punishes
over-segmentation: a few flickering frames inside a long action add false positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from runtime.metrics import ConfusionMatrixMetrics, _f1

#: the overlaps action-segmentation papers report (F1@{10, 25, 50})
STANDARD_OVERLAPS = (0.1, 0.25, 0.5)


def overlap_name(overlap: float) -> str:
    """The metric name of F1 at one overlap threshold: 0.25 -> ``seg_f1_25``."""
    return f"seg_f1_{round(overlap * 100)}"


def segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, start, end) arrays of the runs of equal labels in a 1-D array; ``end`` is
    exclusive."""
    if len(labels) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.concatenate([[0], np.flatnonzero(labels[1:] != labels[:-1]) + 1])
    ends = np.concatenate([starts[1:], [len(labels)]])
    return labels[starts], starts, ends


def segment_counts(
    pred: np.ndarray,
    true: np.ndarray,
    overlaps: Sequence[float],
    background: Sequence[int] = (),
) -> np.ndarray:
    """``[len(overlaps), 3]`` counts (tp, fp, fn) of one sequence's predicted segments.

    Segments whose label is in ``background`` are left out on both sides.
    """
    p_label, p_start, p_end = segments(pred)
    t_label, t_start, t_end = segments(true)
    keep_p = ~np.isin(p_label, background)
    keep_t = ~np.isin(t_label, background)
    p_label, p_start, p_end = p_label[keep_p], p_start[keep_p], p_end[keep_p]
    t_label, t_start, t_end = t_label[keep_t], t_start[keep_t], t_end[keep_t]
    # IoU of every predicted against every true segment of the same label: [P, G]
    inter = np.minimum(p_end[:, None], t_end[None]) - np.maximum(p_start[:, None], t_start[None])
    union = np.maximum(p_end[:, None], t_end[None]) - np.minimum(p_start[:, None], t_start[None])
    iou = np.where(p_label[:, None] == t_label[None], inter.clip(min=0) / union, 0.0)
    counts = np.zeros((len(overlaps), 3), dtype=np.int64)
    for row, overlap in enumerate(overlaps):
        hit = np.zeros(len(t_label), dtype=bool)
        tp = 0
        for j in range(len(p_label)):
            best = int(iou[j].argmax()) if len(t_label) else -1
            if best >= 0 and iou[j, best] >= overlap and not hit[best]:
                hit[best] = True
                tp += 1
        counts[row] = (tp, len(p_label) - tp, len(t_label) - tp)
    return counts


class FrameClassificationMetrics(ConfusionMatrixMetrics):
    """Frame accuracy, macro/per-class F1 (from the confusion matrix) and segment F1@k.

    ``update(logits, target)``: logits ``[B, C, T]``, targets ``[B, T]``; frames whose target
    is ``ignore_index`` (padding, unlabelled frames) are dropped from the sequence before its
    segments are formed. The segment counts are found on the host, one sequence at a time
    (one device-to-host copy per batch, in validation and test only).

    Args:
        class_names: one name per class (``f1_<name>`` metrics).
        overlaps: IoU thresholds in (0, 1]; each gives ``seg_f1_<100 * overlap>``.
        background: class ids whose segments are not scored (e.g. "idle").
        ignore_index: target value of frames that are not scored.
        kwargs: passed on to ``torchmetrics.Metric`` (``dist_sync_on_step``, ...).
    """

    def __init__(
        self,
        class_names: list[str],
        overlaps: Sequence[float] = STANDARD_OVERLAPS,
        background: Sequence[int] = (),
        ignore_index: int = -100,
        **kwargs: Any,
    ) -> None:
        super().__init__(class_names, ignore_index=ignore_index, **kwargs)
        self.overlaps = [float(o) for o in overlaps]
        self.background = [int(b) for b in background]
        self.add_state(
            "seg_counts",
            default=torch.zeros(len(self.overlaps), 3, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, logits: Tensor, target: Tensor) -> None:
        super().update(logits, target)
        preds = logits.argmax(dim=1).cpu().numpy()
        true = target.long().cpu().numpy()
        total = np.zeros((len(self.overlaps), 3), dtype=np.int64)
        for p, t in zip(preds, true, strict=True):
            keep = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
            total += segment_counts(p[keep], t[keep], self.overlaps, self.background)
        self.seg_counts += torch.from_numpy(total).to(self.seg_counts.device)

    def compute(self) -> dict[str, Tensor]:
        out = super().compute()
        if not out:
            return out
        tp, fp, fn = self.seg_counts.double().unbind(dim=1)
        for overlap, value in zip(self.overlaps, _f1(tp, fp, fn), strict=True):
            out[overlap_name(overlap)] = value.float()
        return out
