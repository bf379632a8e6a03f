"""Task definitions of self-supervised objectives (targets made by ``runtime.data.pretext``).

Augmentation classification is a plain ``ClassificationTask`` (one class per transform) and
feature prediction a plain ``RegressionTask``; masked reconstruction and the contrastive
objective have their own definitions here. All are ordinary tasks: they log losses and
metrics, combine under any balancer and are switched off by leaving them out of the config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from runtime.data.validate import TargetSpec
from runtime.tasks import IGNORE_INDEX, RegressionTask, Task


def nt_xent(embeddings: Tensor, pair_ids: Tensor, temperature: float) -> Tensor:
    """NT-Xent (normalized temperature-scaled cross-entropy, the InfoNCE of SimCLR).

    ``embeddings`` ``[N, D]`` are L2-normalized; ``s_ij = z_i . z_j / temperature``. For each
    row ``i`` with a positive (another row with the same pair id; ids equal to -100 are left
    out) the loss is ``-log(exp(s_ip) / sum_{k != i} exp(s_ik))``, averaged over its positives
    and then over the rows. Every other row of the batch is a negative.
    """
    z = F.normalize(embeddings.float(), dim=1)
    logits = z @ z.T / temperature
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    valid = pair_ids != IGNORE_INDEX
    same = (pair_ids[:, None] == pair_ids[None, :]) & valid[:, None] & valid[None, :]
    positive = same & ~eye
    log_prob = logits.masked_fill(eye, float("-inf")).log_softmax(dim=1)
    log_prob = log_prob.masked_fill(~positive, 0.0)
    counts = positive.sum(dim=1)
    per_row = -log_prob.sum(dim=1) / counts.clamp(min=1)
    anchors = (counts > 0).to(per_row.dtype)
    return (per_row * anchors).sum() / anchors.sum().clamp(min=1)


class RetrievalAccuracy(Metric):
    """Share of rows whose most similar other row (cosine) is one of its positives."""

    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")
        self.add_state("rows", default=torch.zeros((), dtype=torch.double), dist_reduce_fx="sum")

    def update(self, embeddings: Tensor, pair_ids: Tensor) -> None:
        z = F.normalize(embeddings.detach().float(), dim=1)
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        nearest = sim.argmax(dim=1)
        valid = pair_ids != IGNORE_INDEX
        has_positive = ((pair_ids[:, None] == pair_ids[None, :]).sum(dim=1) > 1) & valid
        hit = (pair_ids[nearest] == pair_ids) & has_positive
        self.hits += hit.sum()
        self.rows += has_positive.sum()

    def compute(self) -> dict[str, Tensor]:
        """``{"accuracy": ...}``; empty when no row had a positive."""
        if not bool(self.rows > 0):
            return {}
        return {"accuracy": (self.hits / self.rows).float()}


class ContrastiveTask(Task):
    """Contrastive objective over two views (``runtime.data.pretext.ContrastiveViews``):
    outputs ``[2B, D]`` from a projection head (``runtime.heads.ProjectionHead``), targets
    ``[2B]`` pair ids. Loss: :func:`nt_xent` at ``temperature``. Metric: ``accuracy`` (a
    view's nearest neighbour is its partner, :class:`RetrievalAccuracy`)."""

    comparison_metrics = ("accuracy",)

    def __init__(
        self, num_outputs: int = 32, temperature: float = 0.1, loss_weight: float = 1.0
    ) -> None:
        super().__init__(loss_weight=loss_weight, primary_metric="accuracy")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_outputs = num_outputs
        self.temperature = temperature

    def loss(self, outputs: Tensor, target: Tensor) -> Tensor:
        return nt_xent(outputs, target, self.temperature)

    def make_metrics(self) -> Metric:
        return RetrievalAccuracy()

    def predict(self, outputs: Tensor) -> dict[str, Tensor]:
        return {"embedding": F.normalize(outputs.float(), dim=1)}


class MaskedReconstructionTask(RegressionTask):
    """Reconstruct hidden inputs (``runtime.data.pretext.MaskedReconstruction``): outputs
    ``[B, num_outputs]`` (``num_outputs`` = entries of one input, e.g. ``T * F``), targets
    shaped like the inputs with NaN at the visible positions, so the loss (``mse``, ``l1``
    or ``huber``) and the metrics (mae, rmse) count the hidden positions only."""

    def target_spec(self) -> TargetSpec | None:
        return None  # shaped like the inputs, not [B, num_outputs]
