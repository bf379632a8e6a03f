"""Class weights from label frequencies in the training split (rare-class boosting).

A classification task configured with ``class_weights: balanced`` (or ``sqrt_balanced``)
learns its weights from the labels of the training split only, once the data is set up
(``MultiTaskModule.setup``), so validation and test labels never leak into training. The same
split and seed give the same weights, so a resumed run weights its loss exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor

from runtime.data.base import TaskTensorDataset
from runtime.data.multi import MultiDatasetDataModule
from runtime.protocols import LearnsFromTrainingLabels

FrequencyWeighting = Literal["balanced", "sqrt_balanced"]


def frequency_weights(labels: Tensor, num_classes: int, mode: FrequencyWeighting) -> Tensor:
    """Per-class weights from the class ids in ``labels`` (any shape; ids outside
    ``0..num_classes-1``, e.g. -100 for missing, are not counted).

    ``balanced``: ``n / (num_classes * n_c)``, as scikit-learn's ``class_weight="balanced"``:
    every class then carries the same total weight. ``sqrt_balanced``: proportional to
    ``1 / sqrt(n_c)``, a milder boost. Both are scaled so the average weight over the training
    labels is 1 (the loss keeps its scale). A class absent from the training labels gets the
    weight of a class seen once.
    """
    flat = labels.reshape(-1).long()
    flat = flat[(flat >= 0) & (flat < num_classes)]
    counts = torch.bincount(flat, minlength=num_classes).double()
    if counts.sum() == 0:
        raise ValueError("no training labels to compute class weights from")
    inverse = 1.0 / counts.clamp(min=1)
    weights = inverse if mode == "balanced" else inverse.sqrt()
    weights = weights * counts.sum() / (weights * counts).sum()
    return weights.float()


def training_labels(datamodule: object, task: str) -> list[Tensor]:
    """Every training target of ``task`` held by ``datamodule`` (a multi-dataset module or
    one per-dataset module), one tensor per dataset that carries the task."""
    if isinstance(datamodule, MultiDatasetDataModule):
        modules = [
            m for name, m in datamodule.data_modules.items() if task in datamodule.tasks[name]
        ]
    else:
        modules = [datamodule]
    found = []
    for module in modules:
        dataset = getattr(module, "train_dataset", None)
        if dataset is None:
            continue
        if isinstance(dataset, TaskTensorDataset):
            if task in dataset.targets:
                found.append(dataset.targets[task])
            continue
        rows = [dataset[i]["targets"][task] for i in range(len(dataset))]
        found.append(torch.stack([torch.as_tensor(r) for r in rows]))
    return found


def fit_to_training_labels(tasks: Mapping[str, object], datamodule: object | None) -> None:
    """Give each task that asks for them its training labels (all datasets together)."""
    if datamodule is None:
        return
    for name, task in tasks.items():
        if isinstance(task, LearnsFromTrainingLabels) and task.needs_training_labels():
            found = training_labels(datamodule, name)
            if not found:
                raise ValueError(
                    f"task '{name}' derives its class weights from the training split, but "
                    "no dataset has training labels for it"
                )
            task.fit_training_labels(_joined(found))


def _joined(parts: Iterable[Tensor]) -> Tensor:
    return torch.cat([p.reshape(-1) for p in parts])
