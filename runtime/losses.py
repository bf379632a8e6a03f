"""Masked losses: missing labels are masked out of the mean, never dropped from the batch.

All reductions divide by a device-side count (clamped to 1), so a batch whose labels are all
missing gives a zero loss instead of NaN and nothing waits on the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def classification_loss(
    logits: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    class_weights: Tensor | None = None,
    focal_gamma: float | None = None,
) -> Tensor:
    """Cross-entropy (optionally label-smoothed, class-weighted) or focal loss.

    ``logits`` is ``[B, C, ...]`` (class dim 1), ``target`` ``[B, ...]`` int class indices.
    The mean is weighted like ``F.cross_entropy``: by the class weight of each kept target.
    """
    valid = target != ignore_index
    if class_weights is None and focal_gamma is None:  # the common case, in fewer kernels
        total = F.cross_entropy(
            logits,
            target,
            ignore_index=ignore_index,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        return total / valid.sum().clamp(min=1)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    weight = valid.to(logits.dtype)
    if class_weights is not None:
        weight = weight * class_weights[safe_target]
    if focal_gamma is None:
        per_item = F.cross_entropy(
            logits, safe_target, reduction="none", label_smoothing=label_smoothing
        )
    else:
        log_p = F.log_softmax(logits, dim=1)
        log_pt = log_p.gather(1, safe_target.unsqueeze(1)).squeeze(1)
        nll = -log_pt
        if label_smoothing > 0:
            nll = (1 - label_smoothing) * nll - label_smoothing * log_p.mean(dim=1)
        per_item = (1 - log_pt.exp()).pow(focal_gamma) * nll
    return _masked_mean(per_item, weight)


def multilabel_loss(
    logits: Tensor, target: Tensor, *, ignore_index: int = -100, pos_weight: Tensor | None = None
) -> Tensor:
    """Binary cross-entropy over labels; entries equal to ``ignore_index`` are masked."""
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).to(logits.dtype)
    per_item = F.binary_cross_entropy_with_logits(
        logits, safe_target, reduction="none", pos_weight=pos_weight
    )
    return _masked_mean(per_item, valid.to(logits.dtype))


def regression_loss(
    preds: Tensor, target: Tensor, *, kind: str, huber_delta: float = 1.0
) -> Tensor:
    """MSE, L1 or Huber over non-NaN targets; ``[B]`` targets match ``[B, 1]`` outputs."""
    target = target.reshape(preds.shape).to(preds.dtype)
    valid = ~torch.isnan(target)
    safe_target = torch.where(valid, target, preds.detach())
    if kind == "mse":
        per_item = F.mse_loss(preds, safe_target, reduction="none")
    elif kind == "l1":
        per_item = F.l1_loss(preds, safe_target, reduction="none")
    elif kind == "huber":
        per_item = F.huber_loss(preds, safe_target, reduction="none", delta=huber_delta)
    else:
        raise ValueError(f"unknown regression loss {kind!r}: expected mse, l1 or huber")
    return _masked_mean(per_item, valid.to(preds.dtype))
