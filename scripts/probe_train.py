"""The training side of ``mtl-probe``: label subsets, frozen features, probes and fine-tunes.

Kept apart from the command so that each piece is testable on its own and reusable from
Python: :func:`nested_subsets` (stratified, nested label fractions), :func:`features`
(a frozen encoder's pooled features), :func:`linear_probe` (logistic regression on them)
and :func:`train_classifier` (encoder + linear layer trained end to end, for fine-tuning and
for the from-scratch reference under the same budget).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from compiler.errors import ConfigError
from runtime.model import MultiTaskModel

#: labels of this value (the batch contract's "missing") never enter a subset
MISSING = -100


def nested_subsets(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> dict[float, np.ndarray]:
    """Row ids of a labelled subset per fraction, stratified by class and nested.

    Each class's labelled rows are shuffled once (by ``seed``); the subset at fraction ``f``
    takes the first ``ceil(f * n_c)`` rows of every class ``c`` (at least one), so a smaller
    fraction's subset is always inside a larger one's and every class keeps its share.
    """
    rng = np.random.default_rng([seed, 1729])
    order = {}
    for cls in np.unique(labels[labels != MISSING]):
        rows = np.flatnonzero(labels == cls)
        order[int(cls)] = rows[rng.permutation(len(rows))]
    subsets = {}
    for fraction in fractions:
        picked = [rows[: max(1, math.ceil(fraction * len(rows) - 1e-9))] for rows in order.values()]
        subsets[fraction] = np.sort(np.concatenate(picked)) if picked else np.array([], int)
    return subsets


def pool(features: Tensor) -> Tensor:
    """``[B, D]`` from encoder outputs: sequences ``[B, T, D]`` averaged over positions,
    feature maps ``[B, D, H, W]`` over pixels."""
    if features.dim() == 3:
        return features.mean(dim=1)
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    return features.reshape(features.shape[0], -1)


@torch.no_grad()
def features(
    model: MultiTaskModel, inputs: Tensor, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Pooled features of the frozen encoder (and trunk), in eval mode, ``[N, D]``."""
    was_training = model.training
    model.eval()
    try:
        chunks = [
            pool(model.encode(inputs[i : i + batch_size].to(device))).float().cpu()
            for i in range(0, len(inputs), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


@dataclass
class Scores:
    accuracy: float
    macro_f1: float


def scores(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> Scores:
    """Accuracy and macro-F1 over all ``num_classes`` classes (absent ones score 0)."""
    from sklearn.metrics import f1_score

    return Scores(
        accuracy=float((true == predicted).mean()),
        macro_f1=float(
            f1_score(
                true, predicted, labels=np.arange(num_classes), average="macro", zero_division=0
            )
        ),
    )


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    eval_x: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Predicted classes of ``eval_x`` from a logistic regression (L2, lbfgs) fitted on
    standardized frozen features: the linear probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(train_y)
    if len(classes) == 1:  # one class seen: it is the only possible answer
        return np.full(len(eval_x), classes[0])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_x, train_y)
    return probe.predict(eval_x)


class EncoderClassifier(nn.Module):
    """A model's encoder (and trunk), pooled, under a new linear layer."""

    def __init__(self, model: MultiTaskModel, width: int, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(pool(self.model.encode(inputs)))


def train_classifier(
    model: MultiTaskModel,
    train_x: Tensor,
    train_y: Tensor,
    eval_x: Tensor,
    num_classes: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> np.ndarray:
    """Train a copy of ``model``'s encoder with a fresh linear layer on the labelled rows for
    ``steps`` AdamW steps (batches drawn by ``seed``), then predict ``eval_x``: fine-tuning
    from pretrained weights, or the from-scratch reference from random ones."""
    torch.manual_seed(seed)
    encoder = copy.deepcopy(model).to(device)
    width = features(encoder, train_x[:2], device).shape[1]
    net = EncoderClassifier(encoder, width, num_classes).to(device)
    params = [p for name, p in net.named_parameters() if not name.startswith("model.decoders.")]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(train_x))
    order = torch.randperm(len(train_x), generator=generator)
    position = 0
    net.train()
    for step in range(steps):
        if position + size > len(order):
            order, position = torch.randperm(len(train_x), generator=generator), 0
        rows = order[position : position + size]
        position += size
        logits = net(train_x[rows].to(device))
        loss = nn.functional.cross_entropy(logits, train_y[rows].to(device))
        if not bool(torch.isfinite(loss)):
            raise ConfigError(
                f"training diverged: the loss is {loss.item()} at step {step + 1} of {steps} "
                f"(seed {seed}); lower --lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = [
            net(eval_x[i : i + 256].to(device)).argmax(dim=1).cpu()
            for i in range(0, len(eval_x), 256)
        ]
    return torch.cat(predicted).numpy()
