"""The global random generators (torch, CUDA, numpy, Python) in checkpoints, so a resumed fit
draws exactly what the uninterrupted one would have drawn."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

#: checkpoint key of the generator states
RNG_KEY = "rng_states"


def rng_states() -> dict[str, Any]:
    """Global RNG states as plain tensors/tuples, loadable with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGResume(Callback):
    """Saves the generator states in every checkpoint and continues training from those of the
    newest one, in the run that saved it and in one resumed from it alike.

    Whatever draws from the global generators between the save and the next training step (a
    new epoch's loader iterator, the sanity check, a re-run validation) then differs in nothing
    that training sees, so a resume is exact mid-epoch and at epoch ends.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RNG_KEY] = rng_states()
        if _fitting(trainer):
            self._pending = checkpoint[RNG_KEY]  # what the next step draws from

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if RNG_KEY in checkpoint and _fitting(trainer):
            self._pending = checkpoint[RNG_KEY]

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


def _fitting(trainer: Trainer | None) -> bool:
    return trainer is not None and trainer.state.fn == "fit"
