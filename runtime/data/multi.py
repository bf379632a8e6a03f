"""The LightningDataModule that combines one per-dataset module per dataset.

Each batch comes from one dataset, with that dataset's batch size, as the batch contract's dict
``{"dataset", "inputs", "targets", "index"}``; with ``sample_mode: all_datasets`` a training
batch is ``{"dataset": None, "parts": [one such dict per dataset]}``. Sampling and sharding live in
:class:`runtime.data.sampler.MultiDatasetBatchSampler`; this module wires the per-dataset
modules to it, checks the configuration and keeps the training position for checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from compiler.errors import did_you_mean
from runtime.compat import batches_processed_this_epoch
from runtime.data.base import DatasetModule, batch_fetcher
from runtime.data.errors import DataConfigError
from runtime.data.sampler import EVAL_MODE, SAMPLE_MODES, BatchKey, MultiDatasetBatchSampler
from runtime.data.validate import ExpectsTargets, TargetSpec

Batch = dict[str, Any]


class BatchAssembler(Dataset):
    """Turns a :class:`BatchKey` into a batch dict (runs in loader workers when there are any)."""

    def __init__(
        self, names: Sequence[str], datasets: Sequence[Dataset], tasks: Sequence[Sequence[str]]
    ) -> None:
        self.names = list(names)
        self.datasets = list(datasets)
        self.tasks = [list(t) for t in tasks]
        self.fetchers = [batch_fetcher(d) for d in self.datasets]

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: BatchKey | tuple[BatchKey, ...]) -> Batch:
        if isinstance(key, tuple) and not isinstance(key, BatchKey):  # all_datasets: one step
            return {"dataset": None, "parts": [self[k] for k in key]}
        index = torch.as_tensor(np.ascontiguousarray(key.indices), dtype=torch.long)
        sample = self.fetchers[key.dataset](index)
        targets = sample["targets"]
        return {
            "dataset": self.names[key.dataset],
            "inputs": sample["inputs"],
            "targets": {task: targets[task] for task in self.tasks[key.dataset]},
            "index": index,
        }


def _as_is(batch: Batch) -> Batch:
    """The assembler already returns whole batches (module level: picklable for workers)."""
    return batch


class _ResumableLoader(DataLoader):
    """A DataLoader Lightning recognises as resumable; the state is the data module's."""

    def state_dict(self) -> dict[str, int]:
        return self.owner.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.owner.load_state_dict(state)


class MultiDatasetDataModule(pl.LightningDataModule):
    """One LightningDataModule over several datasets, one batch from one dataset at a time.

    Args:
        data_modules: dataset name -> per-dataset module (:class:`DatasetModule`).
        batch_sizes: dataset name -> per-rank batch size (default: the module's batch_size).
        dataset_tasks: dataset name -> tasks whose targets its batches carry (default: all the
            module's tasks); naming a task the module does not serve is an error.
        sample_mode: "random_cycle", "round_robin", "proportional", "temperature" (see the
            README for each mode's epoch length) or "all_datasets" (every step holds one batch
            of every dataset, each with its own batch size: docs/balancing.md).
        refill: upsample smaller datasets while training (never for validation/test/predict).
        temperature: T of the temperature mode: dataset weight = size ** (1 / T).
        sample_limit: samples per epoch per dataset (an int for all, or per dataset name),
            counted over all ranks together; training only, a fresh random subset each epoch.
        num_workers: DataLoader worker processes. None (the default) picks: 0 when training
            on CPU (batches are single gathers from in-memory tensors: workers would only add
            copying), else ``min(4, CPU cores per GPU - 1)`` so the next batches are built
            while the GPU computes. Workers stay alive between epochs.
        pin_memory: copy batches to page-locked memory so the copy to the GPU runs without
            blocking (Lightning copies with ``non_blocking=True``). None (the default): on
            when the trainer runs on CUDA.
        seed: the sampling plan is a function of (seed, epoch) only.
    """

    def __init__(
        self,
        data_modules: dict[str, DatasetModule],
        batch_sizes: dict[str, int] | None = None,
        dataset_tasks: dict[str, list[str]] | None = None,
        sample_mode: str = "random_cycle",
        refill: bool = True,
        temperature: float = 2.0,
        sample_limit: dict[str, int] | int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not data_modules:
            raise DataConfigError("at least one dataset is needed", key=("data_modules",))
        if sample_mode not in SAMPLE_MODES:
            raise DataConfigError(
                f"unknown sample_mode '{sample_mode}'{did_you_mean(sample_mode, SAMPLE_MODES)}; "
                f"choose one of {', '.join(SAMPLE_MODES)}",
                key=("sample_mode",),
            )
        if sample_mode == "temperature" and not temperature > 0:
            raise DataConfigError("temperature must be positive", key=("temperature",))
        self.data_modules = dict(data_modules)
        self.names = list(self.data_modules)
        self.batch_sizes = self._batch_sizes(batch_sizes or {})
        self.dataset_tasks = self._dataset_tasks(dataset_tasks)
        self.sample_limit = self._limits(sample_limit)
        self.sample_mode = sample_mode
        self.refill = refill
        self.temperature = temperature
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self._train_sampler: MultiDatasetBatchSampler | None = None
        self._pending_state: dict[str, int] | None = None

    # ------------------------------------------------------------ config
    def _check_names(self, mapping: dict, key: str) -> None:
        for name in mapping:
            if name not in self.data_modules:
                raise DataConfigError(
                    f"'{name}' is not a dataset of data_modules{did_you_mean(name, self.names)}"
                    f" (datasets: {', '.join(self.names)})",
                    key=(key, name),
                )

    def _batch_sizes(self, given: dict[str, int]) -> dict[str, int]:
        self._check_names(given, "batch_sizes")
        sizes = {}
        for name, module in self.data_modules.items():
            size = given.get(name, getattr(module, "batch_size", None))
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise DataConfigError(
                    f"a positive integer batch size is needed, got {size!r}",
                    key=("batch_sizes", name),
                )
            sizes[name] = size
        return sizes

    def _dataset_tasks(self, given: dict[str, list[str]] | None) -> dict[str, list[str]]:
        given = given or {}
        self._check_names(given, "dataset_tasks")
        tasks = {}
        for name, module in self.data_modules.items():
            served = list(module.tasks)
            wanted = list(given.get(name, served))
            for task in wanted:
                if task not in served:
                    raise DataConfigError(
                        f"dataset '{name}' does not provide task '{task}'"
                        f"{did_you_mean(task, served)}; its tasks: {', '.join(served)}",
                        key=("dataset_tasks", name),
                    )
            tasks[name] = wanted
        return tasks

    def _limits(self, given: dict[str, int] | int | None) -> dict[str, int | None]:
        if given is None or isinstance(given, int):
            given = dict.fromkeys(self.names, given)
        self._check_names(given, "sample_limit")
        for name, limit in given.items():
            if limit is not None and limit < 1:
                raise DataConfigError("sample_limit must be positive", key=("sample_limit", name))
        return {name: given.get(name) for name in self.names}

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Dataset name -> the tasks its batches carry (the keys of ``batch["targets"]``)."""
        return dict(self.dataset_tasks)

    # ------------------------------------------------------------ stages
    def prepare_data(self) -> None:
        for module in self.data_modules.values():
            module.prepare_data()

    def expect_targets(self, specs: Mapping[str, TargetSpec]) -> None:
        """Pass the tasks' target specs to each dataset's module (checked when it loads)."""
        for name, module in self.data_modules.items():
            if isinstance(module, ExpectsTargets):
                module.expect_targets({t: specs[t] for t in self.dataset_tasks[name] if t in specs})

    def setup(self, stage: str | None = None) -> None:
        for name, module in self.data_modules.items():
            try:
                module.setup(stage)
            except DataConfigError as exc:  # locate it: which dataset's module
                raise DataConfigError(
                    exc.message,
                    file=exc.file,
                    line=exc.line,
                    key=("data_modules", name, *(("init_args", *exc.key) if exc.key else ())),
                ) from None

    def split_sizes(self, split: str) -> dict[str, int]:
        """Dataset name -> samples of that split (0 where the split is missing or empty)."""
        return {
            name: 0 if d is None else len(d)
            for name, d in zip(self.names, self._datasets(split), strict=True)
        }

    def preview_batches(self, split: str) -> dict[str, Batch]:
        """One batch per dataset with samples in ``split``: its first rows, at its batch size
        (no sampling, no RNG), for checks before a run starts."""
        datasets = self._datasets(split)
        assembler = BatchAssembler(
            self.names, datasets, [self.dataset_tasks[n] for n in self.names]
        )
        batches = {}
        for i, (name, dataset) in enumerate(zip(self.names, datasets, strict=True)):
            if dataset is not None and len(dataset):
                rows = np.arange(min(self.batch_sizes[name], len(dataset)))
                batches[name] = assembler[BatchKey(i, rows)]
        return batches

    def teardown(self, stage: str | None = None) -> None:
        for module in self.data_modules.values():
            module.teardown(stage)

    def _datasets(self, split: str) -> list[Dataset | None]:
        return [module.dataset_for(split) for module in self.data_modules.values()]

    def _distributed_context(self) -> tuple[int, int]:
        """(rank, world size) from torch.distributed, else the trainer, else a single process."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return 0, 1

    def _loader(self, split: str, sampler: MultiDatasetBatchSampler, datasets: list) -> DataLoader:
        assembler = BatchAssembler(
            self.names, datasets, [self.dataset_tasks[n] for n in self.names]
        )
        loader_cls = _ResumableLoader if split == "train" else DataLoader
        workers = self.loader_workers()
        loader = loader_cls(
            assembler,
            sampler=sampler,
            batch_size=None,
            collate_fn=_as_is,
            num_workers=workers,
            pin_memory=self.pins_memory(),
            persistent_workers=workers > 0,
        )
        if split == "train":
            loader.owner = self
        return loader

    #: where batches go when no trainer says so (``for_task``'s ``device``)
    _device_hint: str | None = None

    def _on_cuda(self) -> bool:
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return (self._device_hint or "").startswith("cuda")

    def loader_workers(self) -> int:
        """``num_workers``, or the default for where training runs (see the class doc)."""
        if self.num_workers is not None:
            return self.num_workers
        if not self._on_cuda():
            return 0
        per_device = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
        return max(0, min(4, per_device - 1))

    def pins_memory(self) -> bool:
        """``pin_memory``, or on when the trainer runs on CUDA."""
        return self._on_cuda() if self.pin_memory is None else self.pin_memory

    def for_task(self, task: str, batch_size: int, device: str) -> MultiDatasetDataModule:
        """The same loading (workers, pinning, sampling, seed) for batches bound for
        ``device``, over only the datasets whose batches carry ``task``, each at
        ``batch_size`` and with only that task's targets: what ``mtl-throughput --real-data``
        times."""
        names = [n for n in self.names if task in self.dataset_tasks[n]]
        narrowed = MultiDatasetDataModule(
            {n: self.data_modules[n] for n in names},
            dict.fromkeys(names, batch_size),
            {n: [task] for n in names},
            sample_mode=self.sample_mode,
            refill=self.refill,
            temperature=self.temperature,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            seed=self.seed,
        )
        narrowed._device_hint = device
        return narrowed

    def make_sampler(self, split: str, rank: int, world_size: int) -> MultiDatasetBatchSampler:
        """The batch sampler of a split for one rank (public so tools and tests can plan)."""
        datasets = self._datasets(split)
        sizes = [0 if d is None else len(d) for d in datasets]
        batch_sizes = [self.batch_sizes[n] for n in self.names]
        if split != "train":
            return MultiDatasetBatchSampler(
                sizes, batch_sizes, EVAL_MODE, refill=False, shuffle=False,
                seed=self.seed, rank=rank, world_size=world_size,
            )  # fmt: skip
        for name, size in zip(self.names, sizes, strict=True):
            if size == 0:
                raise DataConfigError(
                    "the dataset has no training samples", key=("data_modules", name)
                )
        return MultiDatasetBatchSampler(
            sizes, batch_sizes, self.sample_mode, refill=self.refill,
            temperature=self.temperature, limits=[self.sample_limit[n] for n in self.names],
            shuffle=True, seed=self.seed, rank=rank, world_size=world_size,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._distributed_context()
        sampler = self.make_sampler("train", rank, world_size)
        sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        if self._pending_state is not None:
            sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        self._train_sampler = sampler
        return self._loader("train", sampler, self._datasets("train"))

    def _eval_loader(self, split: str) -> DataLoader | list:
        rank, world_size = self._distributed_context()
        sampler = self.make_sampler(split, rank, world_size)
        if len(sampler) == 0:
            return []
        return self._loader(split, sampler, self._datasets(split))

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader | list:
        return self._eval_loader("predict")

    # ------------------------------------------------------- checkpointing
    def _consumed_batches(self) -> int | None:
        """Training batches used so far this epoch, per the trainer (loaders prefetch ahead)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return None
        consumed = batches_processed_this_epoch(trainer)
        if consumed >= trainer.num_training_batches:  # e.g. limit_train_batches ended the epoch
            return len(self._train_sampler)
        return consumed

    def state_dict(self) -> dict[str, int]:
        """Training position ``{"epoch", "step"}``: the next batch a resumed run delivers."""
        if self._train_sampler is None:
            return dict(self._pending_state or {})
        return self._train_sampler.state_dict(self._consumed_batches())

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume training at ``state_dict``'s position (applied when the loader is built)."""
        if not state_dict:
            return
        if self._train_sampler is None:
            self._pending_state = dict(state_dict)
        else:
            self._train_sampler.load_state_dict(state_dict)
