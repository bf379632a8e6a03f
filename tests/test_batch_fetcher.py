"""runtime.data.base.batch_fetcher: one way to read a batch of samples from any dataset."""

from __future__ import annotations

import pickle

import torch
from torch.utils.data import Dataset

from runtime.data.base import batch_fetcher


class Items(Dataset):
    """A dataset read one sample at a time."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict:
        return {"inputs": torch.full((2,), float(i)), "targets": {"t": torch.tensor(i)}}


class WholeBatches(Items):
    """A dataset that serves a batch at once (and says so by its get_batch)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def get_batch(self, index: torch.Tensor) -> dict:
        self.calls.append(index.tolist())
        return {"inputs": index.float()[:, None] * 10, "targets": {"t": index}}


def test_a_dataset_of_items_is_collated():
    batch = batch_fetcher(Items())(torch.tensor([3, 1]))
    assert batch["inputs"].tolist() == [[3.0, 3.0], [1.0, 1.0]]
    assert batch["targets"]["t"].tolist() == [3, 1]


def test_a_batch_fetching_dataset_serves_the_whole_batch_itself():
    dataset = WholeBatches()
    batch = batch_fetcher(dataset)(torch.tensor([4, 0, 2]))
    assert dataset.calls == [[4, 0, 2]]  # one call, not one per sample
    assert batch["inputs"][:, 0].tolist() == [40.0, 0.0, 20.0]


def test_the_fetcher_pickles_for_spawned_loader_workers():
    again = pickle.loads(pickle.dumps(batch_fetcher(Items())))
    assert again(torch.tensor([2]))["targets"]["t"].tolist() == [2]
