"""A callback for the balancing DDP test: every rank saves its final model parameters."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class SaveRankWeights(Callback):
    """Writes ``<folder>/rank<N>.pt`` (the model's parameters) when training ends."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {n: p.detach().clone() for n, p in pl_module.model.named_parameters()}
        torch.save(weights, self.folder / f"rank{trainer.global_rank}.pt")
