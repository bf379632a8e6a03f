"""A trivial LightningModule that records which samples each step saw (for data tests).

Shared by the checkpoint-resumption test and the DDP coverage script (tests/data_ddp_worker.py).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from runtime.data import MultiDatasetDataModule, SyntheticDataModule


def synthetic_datamodule(**kwargs) -> MultiDatasetDataModule:
    """Three small tabular datasets of different sizes and batch sizes."""
    modules = {
        name: SyntheticDataModule(
            num_samples=n, input_shape=[4], tasks={name: {"kind": "regression"}}, seed=i
        )
        for i, (name, n) in enumerate([("a", 50), ("b", 23), ("c", 71)])
    }
    return MultiDatasetDataModule(modules, batch_sizes={"a": 4, "b": 3, "c": 5}, **kwargs)


class RecordingModule(pl.LightningModule):
    """Linear model on 4 features; keeps (epoch, dataset, sample ids) of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: dict[str, list] = {"train": [], "val": []}

    def _record(self, split: str, batch: dict) -> torch.Tensor:
        self.seen[split].append((self.current_epoch, batch["dataset"], batch["index"].tolist()))
        return self.layer(batch["inputs"]).pow(2).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)
