"""Self-supervised data: any per-dataset module's inputs, with targets derived from them.

:class:`SelfSupervisedModule` wraps a per-dataset module (``base``), ignores its labels and
serves one self-supervised task whose inputs and targets an objective
(:mod:`runtime.data.pretext`) makes from each batch. One wrapper per objective: a multitask
self-supervised run lists several (each with its task and head), so switching an objective
off is leaving its dataset config out of the maker, and every balancer applies.

The randomness of a batch's views comes from a generator seeded by ``(seed, split, the
batch's sample ids)``: the sampler's plan already fixes which samples a step takes, so the
same step gets the same views after a resume and in a loader worker or the main process
alike, while a new epoch (a new shuffle) gets new views.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from runtime.data.base import DatasetModule, Sample, batch_fetcher
from runtime.data.pretext import Objective

_SPLIT_SALT = {"train": 0, "val": 1, "test": 2, "predict": 3}


def batch_generator(seed: int, split: str, index: torch.Tensor) -> torch.Generator:
    """A CPU generator determined by the seed, the split and the batch's sample ids."""
    entropy = [int(seed) & 0xFFFFFFFF, _SPLIT_SALT.get(split, 4), *index.tolist()]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


class SelfSupervisedDataset(Dataset):
    """One split of a base dataset, served as ``{"inputs", "targets": {task: ...}}`` with
    the objective's views and targets. Use :meth:`get_batch`: a contrastive batch has twice as
    many input rows as sample ids."""

    def __init__(
        self, base: Dataset, objective: Objective, task: str, seed: int, split: str
    ) -> None:
        self.base = base
        self._fetch = batch_fetcher(base)
        self.objective = objective
        self.task = task
        self.seed = seed
        self.split = split

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def get_batch(self, index: torch.Tensor) -> Sample:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        generator = batch_generator(self.seed, self.split, index)
        inputs, target = self.objective.make(self._fetch(index)["inputs"], generator)
        return {"inputs": inputs, "targets": {self.task: target}}

    def __getitem__(self, index: int | torch.Tensor) -> Sample:
        """A batch of one for an int (see :meth:`get_batch`)."""
        return self.get_batch(torch.as_tensor(index).reshape(-1))


class SelfSupervisedModule(DatasetModule):
    """A per-dataset module serving one self-supervised task made from ``base``'s inputs.

    Args:
        base: any per-dataset module (its splits and inputs are used, its labels ignored).
        objective: how views and targets are made (:mod:`runtime.data.pretext`).
        task: the task's name (what the dataset config's decoder and task definition use).
        seed: seeds the views (with each batch's sample ids; see the module docstring).
        batch_size: fallback batch size (default: the base's).
    """

    def __init__(
        self,
        base: DatasetModule,
        objective: Objective,
        task: str = "ssl",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size or base.batch_size)
        self.base = base
        self.objective = objective
        self.task = task
        self.seed = seed

    @property
    def tasks(self) -> list[str]:
        return [self.task]

    def prepare_data(self) -> None:
        self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.base.setup(stage)
        for split in ("train", "val", "test"):
            data: Any = self.base.dataset_for(split)
            wrapped = (
                None
                if data is None
                else SelfSupervisedDataset(data, self.objective, self.task, self.seed, split)
            )
            setattr(self, f"{split}_dataset", wrapped)

    def teardown(self, stage: str | None = None) -> None:
        self.base.teardown(stage)
