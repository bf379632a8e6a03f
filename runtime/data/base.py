"""The per-dataset data module contract, and the tensor-backed dataset the built-ins share.

A *per-dataset module* (:class:`DatasetModule`) knows one dataset: its tasks and its
train/val/test splits. :class:`runtime.data.MultiDatasetDataModule` combines several of them
and does all batching, sampling and sharding, so a per-dataset module never builds loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from runtime.data.errors import DataConfigError
from runtime.data.splits import split_indices
from runtime.data.validate import Source, TargetSpec, require_labels, validated
from runtime.protocols import BatchFetching

Sample = dict[str, Any]
"""``{"inputs": Tensor, "targets": {task: Tensor}}`` - one sample, or a batch of them."""


def _collated(dataset: Dataset, index: torch.Tensor) -> Sample:
    return default_collate([dataset[int(i)] for i in index])


def batch_fetcher(dataset: Dataset) -> Callable[[torch.Tensor], Sample]:
    """How to read the samples ``index`` (a 1-D long tensor) of ``dataset`` as one batch: its
    own ``get_batch`` when it fetches whole batches (:class:`~runtime.protocols.BatchFetching`),
    else its items one by one, collated. Decided once per dataset, not per batch; picklable, so
    loader workers started by spawn can hold it."""
    if isinstance(dataset, BatchFetching):
        return dataset.get_batch
    return partial(_collated, dataset)


class TaskTensorDataset(Dataset):
    """Samples held as whole tensors, so a batch is one gather per tensor, not a per-item collate.

    ``dataset[i]`` gives one sample; ``dataset.get_batch(index_tensor)`` gives a batch with the
    same layout and a leading batch axis. Targets follow the batch contract (int64 class ids with
    -100 for missing, float regression targets with NaN for missing, ...).
    """

    def __init__(self, inputs: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        for task, values in targets.items():
            if len(values) != len(inputs):
                raise DataConfigError(
                    f"target '{task}' has {len(values)} rows but the inputs have {len(inputs)}"
                )
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int | torch.Tensor) -> Sample:
        """One sample for an int; a batch for a LongTensor of indices."""
        return {
            "inputs": self.inputs[index],
            "targets": {task: values[index] for task, values in self.targets.items()},
        }

    get_batch = __getitem__

    def subset(self, indices: np.ndarray | torch.Tensor) -> TaskTensorDataset:
        """A new dataset holding copies of the given rows (a split)."""
        rows = self[torch.as_tensor(indices, dtype=torch.long)]
        return TaskTensorDataset(rows["inputs"], rows["targets"])


class DatasetModule(pl.LightningDataModule):
    """Base class of per-dataset data modules: the extension contract.

    A subclass must provide

    * ``tasks`` - the names of the label sets (tasks) it serves;
    * ``setup(stage)`` that leaves ``train_dataset``, ``val_dataset`` and ``test_dataset`` set
      (``None`` where the split does not exist) and can be called more than once;
    * datasets whose items are ``{"inputs": Tensor, "targets": {task: Tensor}}`` following the
      batch contract's dtypes. An optional ``get_batch(LongTensor)`` returning the same dict
      with a batch axis is used instead of per-item fetching and collation when present.

    ``predict_dataset`` defaults to ``test_dataset``. ``batch_size`` is only a fallback used
    when the multi-dataset module's ``batch_sizes`` does not name this dataset.
    """

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.batch_size = batch_size
        #: task -> the targets it accepts (set by :meth:`expect_targets`), checked on load
        self.target_specs: dict[str, TargetSpec] = {}
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._predict_dataset: Dataset | None = None

    @property
    def tasks(self) -> list[str]:
        """Task names whose targets this module's samples carry."""
        raise NotImplementedError(f"{type(self).__name__} must define `tasks`")

    @property
    def predict_dataset(self) -> Dataset | None:
        """What ``predict`` runs over: the test split unless a subclass sets another."""
        return self._predict_dataset if self._predict_dataset is not None else self.test_dataset

    @predict_dataset.setter
    def predict_dataset(self, dataset: Dataset | None) -> None:
        self._predict_dataset = dataset

    def expect_targets(self, specs: Mapping[str, TargetSpec]) -> None:
        """The targets the model's tasks accept, checked when the data loads (call before
        ``setup``)."""
        self.target_specs = {t: s for t, s in specs.items() if t in self.tasks}

    def dataset_for(self, stage: str) -> Dataset | None:
        """The split used for one of "train", "val", "test", "predict"."""
        return getattr(self, f"{stage}_dataset")


class TensorSplitModule(DatasetModule):
    """Shared machinery of the built-in modules: load whole tensors once, split them by seed.

    Subclasses implement :meth:`load`; :meth:`setup` splits the result (stratified by
    :meth:`strata`) and calls :meth:`fit_transform` so preprocessing can use training
    statistics only.
    """

    def __init__(
        self,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        super().__init__(batch_size=batch_size)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def load(self) -> TaskTensorDataset:
        """All samples of the dataset, before splitting."""
        raise NotImplementedError

    def strata(self, data: TaskTensorDataset) -> np.ndarray | None:
        """Labels to stratify the split by: the first one-label-per-sample integer task."""
        for values in data.targets.values():
            if values.dtype == torch.int64 and values.dim() == 1:
                return values.numpy()
        return None

    def fit_transform(self, train: TaskTensorDataset, others: list[TaskTensorDataset]) -> None:
        """Preprocess in place using training statistics only (default: nothing)."""

    def source(self) -> Source:
        """Where :meth:`load`'s rows come from, for messages (subclasses name their file)."""
        return Source(name=type(self).__name__)

    def checked(self, data: TaskTensorDataset, source: Source) -> TaskTensorDataset:
        """``data`` checked (finite inputs, target dtypes and ranges) and cast for its tasks."""
        return TaskTensorDataset(
            data.inputs, validated(data.inputs, data.targets, self.target_specs, source)
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        source = self.source()
        data = self.checked(self.load(), source)
        parts = split_indices(
            len(data), self.val_fraction, self.test_fraction, self.seed, self.strata(data)
        )
        train, val, test = (data.subset(part) for part in parts)
        require_labels(train.targets, source)
        self.fit_transform(train, [val, test])
        self.train_dataset, self.val_dataset, self.test_dataset = train, val, test


def standardize_(
    train: torch.Tensor, others: list[torch.Tensor], dim: int | tuple[int, ...] = 0
) -> None:
    """Z-score tensors in place with the mean/std of ``train`` over ``dim`` (NaN-safe)."""
    finite = torch.where(torch.isnan(train), torch.zeros_like(train), train)
    count = (~torch.isnan(train)).sum(dim=dim, keepdim=True).clamp(min=1)
    mean = finite.sum(dim=dim, keepdim=True) / count
    centered = torch.where(torch.isnan(train), torch.zeros_like(train), train - mean)
    std = ((centered**2).sum(dim=dim, keepdim=True) / count).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    for tensor in [train, *others]:
        tensor.sub_(mean).div_(std)
