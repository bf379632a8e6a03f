"""One dataset split among federated clients: IID, or non-IID by label (Dirichlet).

:class:`PartitionedDataModule` wraps any per-dataset module and keeps one client's share of
each of its splits, so a client's run config is the ordinary run config with its data modules
wrapped: the runtime, the sampler and the reports see an ordinary (smaller) dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from runtime.data.base import DatasetModule, TaskTensorDataset
from runtime.data.errors import DataConfigError
from runtime.data.validate import TargetSpec

Scheme = Literal["iid", "dirichlet"]
SCHEMES: tuple[str, ...] = ("iid", "dirichlet")
SPLITS = ("train", "val", "test")
#: how many Dirichlet draws may be made before a share without samples is an error
MAX_DRAWS = 100


def _labels(dataset: Dataset, task: str | None) -> np.ndarray:
    """One integer group per sample: the label of ``task`` (or of the first integer task with
    one label per sample); -1 groups samples whose label is missing or not an integer."""
    if isinstance(dataset, TaskTensorDataset):
        targets = dataset.targets
    else:  # any map-style dataset of the batch contract
        items = [dataset[i]["targets"] for i in range(len(dataset))]
        targets = {t: torch.stack([torch.as_tensor(x[t]) for x in items]) for t in items[0]}
    names = [task] if task is not None else list(targets)
    for name in names:
        values = targets.get(name)
        if values is not None and values.dim() == 1 and not values.is_floating_point():
            labels = values.numpy().astype(np.int64)
            return np.where(labels < 0, -1, labels)
    return np.full(len(dataset), -1, dtype=np.int64)


def _split(
    labels: np.ndarray,
    clients: int,
    alpha: float,
    seed: int,
    draw: int,
    shuffle: np.random.Generator,
) -> list[np.ndarray]:
    """One Dirichlet draw: label ``l``'s clients' shares come from the seed, the draw and
    ``l`` alone, so the train, val and test splits of a client follow one distribution."""
    shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for label in np.unique(labels):
        members = shuffle.permutation(np.flatnonzero(labels == label))
        weights = np.random.default_rng([seed, draw, int(label) + 1]).dirichlet([alpha] * clients)
        cuts = (np.cumsum(weights)[:-1] * len(members)).round().astype(int)
        for client, part in enumerate(np.split(members, cuts)):
            shares[client].append(part)
    return [np.sort(np.concatenate(s)) for s in shares]


def first_full_draw(labels: np.ndarray, clients: int, alpha: float, seed: int) -> int:
    """The first Dirichlet draw that gives every client training samples."""
    if clients > len(labels):
        raise DataConfigError(
            f"{clients} clients but only {len(labels)} training samples to share among them"
        )
    for draw in range(MAX_DRAWS):
        parts = _split(labels, clients, alpha, seed, draw, np.random.default_rng([seed, draw]))
        if all(len(p) for p in parts):
            return draw
    raise DataConfigError(
        f"a Dirichlet partition with alpha={alpha} left a client without training samples in "
        f"{MAX_DRAWS} draws ({len(labels)} samples, {clients} clients): raise alpha or use "
        "fewer clients"
    )


def partition_indices(
    labels: np.ndarray, clients: int, scheme: str, alpha: float, seed: int, draw: int = 0,
    stream: int = 0,
) -> list[np.ndarray]:  # fmt: skip
    """Sample indices of each client (sorted), every sample in exactly one client.

    ``iid``: a seeded shuffle cut into near-equal shares. ``dirichlet``: for each label, the
    clients' shares of its samples are drawn from Dirichlet(alpha) (small alpha: each client
    sees few labels); ``draw`` picks the draw (:func:`first_full_draw`), ``stream`` the split.
    """
    n = len(labels)
    if clients > n:
        raise DataConfigError(f"{clients} clients but only {n} samples to share among them")
    shuffle = np.random.default_rng([seed, draw, stream])
    if scheme == "iid":
        return [np.sort(part) for part in np.array_split(shuffle.permutation(n), clients)]
    return _split(labels, clients, alpha, seed, draw, shuffle)


class PartitionedDataModule(DatasetModule):
    """One client's share of another per-dataset module's train, val and test splits.

    Args:
        dataset: the per-dataset module being shared (its own config, unchanged).
        num_clients: how many clients share it.
        client: which share this is (0-based).
        scheme: ``iid`` or ``dirichlet`` (non-IID by label).
        alpha: the Dirichlet concentration (``dirichlet`` only): small is skewed.
        label_task: the task whose labels drive ``dirichlet`` (default: the first integer
            task with one label per sample).
        seed: the partition's seed (every client must use the same one).
    """

    def __init__(
        self,
        dataset: DatasetModule,
        num_clients: int,
        client: int,
        scheme: Scheme = "iid",
        alpha: float = 0.5,
        label_task: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset.batch_size)
        if num_clients < 1 or not 0 <= client < num_clients:
            raise DataConfigError(
                f"client {client} of {num_clients}: need 0 <= client < num_clients",
                key=("client",),
            )
        if scheme not in SCHEMES:
            raise DataConfigError(f"scheme must be one of {SCHEMES}", key=("scheme",))
        if alpha <= 0:
            raise DataConfigError(f"alpha must be positive, got {alpha}", key=("alpha",))
        self.dataset = dataset
        self.num_clients, self.client = num_clients, client
        self.scheme, self.alpha, self.label_task, self.seed = scheme, alpha, label_task, seed

    @property
    def tasks(self) -> list[str]:
        return self.dataset.tasks

    def expect_targets(self, specs: Mapping[str, TargetSpec]) -> None:
        super().expect_targets(specs)
        self.dataset.expect_targets(specs)

    def prepare_data(self) -> None:
        self.dataset.prepare_data()

    def shares(self, split: str) -> list[np.ndarray]:
        """Every client's indices into the wrapped module's ``split`` (after its setup)."""
        data = self.dataset.dataset_for(split)
        if data is None or len(data) == 0:
            return [np.zeros(0, dtype=np.int64)] * self.num_clients
        draw = 0
        if self.scheme == "dirichlet":
            train = self.dataset.dataset_for("train")
            labels = _labels(train, self.label_task) if train is not None else np.zeros(0)
            draw = first_full_draw(labels, self.num_clients, self.alpha, self.seed)
        if split != "train" and len(data) < self.num_clients:  # small splits may leave some out
            return [np.arange(len(data))[i :: self.num_clients] for i in range(self.num_clients)]
        labels = _labels(data, self.label_task)
        return partition_indices(
            labels, self.num_clients, self.scheme, self.alpha, self.seed, draw, SPLITS.index(split)
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.dataset.setup(stage)
        kept: dict[str, Dataset | None] = {}
        for split in SPLITS:
            data = self.dataset.dataset_for(split)
            if data is None:
                kept[split] = None
                continue
            rows = self.shares(split)[self.client]
            kept[split] = (
                data.subset(rows)
                if isinstance(data, TaskTensorDataset)
                else (Subset(data, rows.tolist()))
            )
        self.train_dataset, self.val_dataset, self.test_dataset = (kept[s] for s in SPLITS)
