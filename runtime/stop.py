"""``GracefulStop``: a resumable checkpoint when a scheduler stops ``mtl-run fit`` (SIGTERM)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from runtime.exits import RUN


class GracefulStop(Callback):
    """On SIGTERM during training (Lightning stops after the current step) save ``checkpoint``
    (``last.ckpt``) at that step, so ``--resume`` continues exactly; note Ctrl-C so the exit
    code is 130 (Lightning exits 1 on it). The exit itself is :func:`runtime.exits.guarded`'s."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        RUN.in_fit = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        RUN.in_fit = False

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        RUN.in_fit = False
        if isinstance(exception, KeyboardInterrupt):
            RUN.interrupted = True
        elif (
            isinstance(exception, SIGTERMException) and trainer.training and trainer.global_step > 0
        ):
            trainer.save_checkpoint(self.checkpoint)
            RUN.saved = self.checkpoint
