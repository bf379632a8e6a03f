"""Inputs for ``mtl-throughput``: batches shaped like the run's data modules produce them.

A *sample* is gathered per task from the run's own training loader (batch contract dicts,
only that task's targets). Synthetic batches keep the sample's shapes and dtypes: floating
inputs are drawn from N(0, 1), integer inputs and all targets are rows of the sample taken at
random, so labels stay valid for the task's loss. Real batches (``--real-data``) come from the
run's own training DataLoader (:func:`loader_batches`), so their timing includes its workers,
memory pinning and the copy to the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor

from compiler.errors import ConfigError

Batch = dict[str, Any]


def take(obj: Any, index: Tensor) -> Any:
    """Rows ``index`` of every tensor in a nested dict/list (other values kept)."""
    return apply_to_collection(obj, Tensor, lambda t: t[index])


def _cat(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_cat(list(v)) for v in zip(*parts, strict=True))
    return first


def rows(batch: Batch) -> int:
    """Batch size: the inputs' first dimension (or a target's, for non-tensor inputs)."""
    inputs = batch["inputs"]
    if isinstance(inputs, Tensor):
        return inputs.shape[0]
    return next(iter(batch["targets"].values())).shape[0]


def _loader_batches(datamodule: Any) -> Iterable[Batch]:
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.train_dataloader()


def gather_samples(datamodule: Any, tasks: list[str], needed: int) -> dict[str, Batch]:
    """Per task, at least ``needed`` rows from one pass over the training loader (fewer when
    the split is smaller), as one batch carrying only that task's targets."""
    if datamodule is None:
        raise ConfigError("the run config has no data section: input shapes are unknown")
    parts: dict[str, list[Batch]] = {t: [] for t in tasks}
    count = dict.fromkeys(tasks, 0)
    for batch in _loader_batches(datamodule):
        for task in tasks:
            if task in batch.get("targets", {}) and count[task] < needed:
                part = {**batch, "targets": {task: batch["targets"][task]}}
                part.pop("index", None)
                parts[task].append(part)
                count[task] += rows(part)
        if all(n >= needed for n in count.values()):
            break
    empty = [t for t in tasks if not parts[t]]
    if empty:
        raise ConfigError(f"the training data has no batch with targets for {', '.join(empty)}")
    return {
        t: {
            **p[0],
            "inputs": _cat([b["inputs"] for b in p]),
            "targets": _cat([b["targets"] for b in p]),
        }
        for t, p in parts.items()
    }


@runtime_checkable
class TaskLoaders(Protocol):
    """A data module that can build its loading for one task at one batch size
    (``runtime.data.MultiDatasetDataModule.for_task``)."""

    def for_task(self, task: str, batch_size: int, device: str) -> Any: ...


def loader_batches(datamodule: Any, task: str, batch_size: int, device: str) -> Iterator[Batch]:
    """Endless training batches carrying ``task``, from the run's own DataLoader: narrowed to
    the task's datasets at ``batch_size`` where the data module can (:class:`TaskLoaders`),
    else its training loader as configured, keeping the batches that carry the task."""
    if isinstance(datamodule, TaskLoaders):
        datamodule = datamodule.for_task(task, batch_size, device)
    batches = _loader_batches(datamodule)
    while True:
        found = False
        for batch in batches:
            if task in batch.get("targets", {}):
                found = True
                yield {**batch, "targets": {task: batch["targets"][task]}}
        if not found:
            raise ConfigError(f"the training data has no batch with targets for {task}")


def synthetic_batch(sample: Batch, size: int, seed: int = 0) -> Batch:
    """A random batch of ``size`` rows shaped like ``sample`` (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    batch = take(sample, torch.randint(rows(sample), (size,), generator=g))

    def noise(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype) if t.is_floating_point() else t

    return {**batch, "inputs": apply_to_collection(batch["inputs"], Tensor, noise)}


def shape_of(batch: Batch) -> list[int] | None:
    """One sample's input shape (without the batch axis), for reports."""
    inputs = batch["inputs"]
    return list(inputs.shape[1:]) if isinstance(inputs, Tensor) else None
