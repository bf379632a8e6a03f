"""Finding, loading (always ``weights_only=True``) and writing checkpoints: atomically, under
names that never change, and only into a model they fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from compiler.files import atomic_file
from runtime.compat import (
    ModelCheckpointHooks,
    checkpoint_schedule,
    saves_on_train_epoch_end,
    skips_saving,
)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through the toolkit's one atomic writer: a temporary
    file in the checkpoint's own directory, fsynced, then renamed over the target, so a kill
    or a full disk never leaves a truncated ``last.ckpt``/``best.ckpt`` and the previous one
    stays until the new one is complete (Lightning's own writer copies across file systems)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        with atomic_file(Path(path)) as handle:
            torch.save(checkpoint, handle)


class RunCheckpoint(ModelCheckpointHooks, ModelCheckpoint):
    """``ModelCheckpoint`` that keeps its file names across resumes: no ``-v1`` versions, and a
    run directory moved or copied elsewhere takes its best/last bookkeeping along (Lightning
    drops it when the directory path changed, then writes ``best-v1.ckpt``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(enable_version_counter=False, **kwargs)
        self._last_step_saved = -1

    def after_save_last(self, trainer: Any) -> None:
        self._last_step_saved = trainer.global_step

    def _keep_last_current(self, trainer: Any, skip: bool) -> None:
        """Lightning 2.6 rewrites ``last.ckpt`` only when the monitored score improved; a
        killed run would then resume from an old epoch. Write it at every epoch's end."""
        if self.save_last and not skip and self._last_step_saved != trainer.global_step:
            self.save_last_now(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        skip = skips_saving(self, trainer) or saves_on_train_epoch_end(self, trainer)
        super().on_validation_end(trainer, pl_module)
        self._keep_last_current(trainer, skip)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        skip = skips_saving(self, trainer) or not saves_on_train_epoch_end(self, trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._keep_last_current(trainer, skip)

    @property
    def state_key(self) -> str:
        # the name plain ModelCheckpoints used, so older run directories resume too
        return f"ModelCheckpoint{self._state_key_fields()!r}"

    def _state_key_fields(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, **checkpoint_schedule(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            state_dict = relocated(state_dict, old, self.dirpath)
        super().load_state_dict(state_dict)


def relocated(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A ModelCheckpoint state whose file paths under ``old`` now point under ``new``."""

    def move(value: Any) -> Any:
        if isinstance(value, str) and value and Path(value).parent == Path(old):
            return str(Path(new) / Path(value).name)
        return value

    out = {k: move(v) for k, v in state.items()}
    out["dirpath"] = new
    if isinstance(state.get("best_k_models"), dict):
        out["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return out
