"""Quiet by default: Lightning's messages that tell an mtl-run user nothing are dropped.

Kept: everything else Lightning says (GPU/TPU availability, seeds, real warnings), once, as
Python's warning filters and Lightning's own warning cache already do.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from runtime.protocols import inner_model

# Info lines: advertisements, and a note about how Lightning sizes the LR schedule.
_DROPPED_INFO = ("💡 Tip:", "Loading `train_dataloader` to estimate number of stepping batches")
_DROPPED_WARNINGS = (
    # mtl-run passes args on purpose
    ".*LightningCLI's args parameter.*",
    # the run directory holds our own files before the CSV logger starts, and a resumed run's
    # checkpoints/ is expected to be full
    ".*Experiment logs directory.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    # epoch metrics are torchmetrics states, already reduced across processes at epoch end;
    # per-step losses are each rank's own by design (syncing them would stall every step)
    ".*when logging on epoch level in distributed setting to accumulate the metric across.*",
    ".*isinstance.treespec, LeafSpec.*",
)


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(text) for text in _DROPPED_INFO)


def quiet_lightning() -> None:
    """Install the filters (idempotent)."""
    for pattern in _DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    names = (
        "lightning.pytorch",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric",
        "",
    )
    for name in names:
        logger = logging.getLogger(name)
        targets: list[Any] = [logger, *logger.handlers]
        for target in targets:
            if not any(isinstance(f, _DropInfo) for f in target.filters):
                target.addFilter(_DropInfo())


class ParameterSummary(Callback):
    """One line with the parameter counts, instead of Lightning's model-summary table (whose
    FLOPs column is always 0 unless the model declares an example input)."""

    @rank_zero_only
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        total = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        print(
            f"model: {type(inner_model(pl_module)).__name__}, "
            f"{total:,} parameters ({trainable:,} trainable)",
            file=sys.stderr,
        )


def summary_kwargs(trainer_config: dict[str, Any]) -> tuple[dict[str, Any], list[Callback]]:
    """Trainer arguments and callbacks for the model summary: the one-line summary unless the
    config asks for Lightning's table (``trainer.enable_model_summary: true``) or none."""
    if trainer_config.get("enable_model_summary") is not None:
        return {}, []
    return {"enable_model_summary": False}, [ParameterSummary()]
