"""``ValidationHistory``: the callback that keeps every validation pass of a fit."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from runtime.protocols import RecordsConfusion


class ValidationHistory(Callback):
    """Records every validation pass (metrics and confusion matrices) so the report can show
    the metrics of whichever checkpoint was selected as best; saved in checkpoints so a
    resumed run keeps its history."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        recorded = pl_module.confusion_matrices if isinstance(pl_module, RecordsConfusion) else {}
        confusion = recorded.get("val", {})
        self.entries.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "metrics": metrics,
                "confusion": {t: cm.tolist() for t, cm in confusion.items()},
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.entries = list(state_dict.get("entries", []))

    def best(self, monitor: str, mode: str, score: float | None) -> dict[str, Any] | None:
        """The first validation pass whose ``monitor`` equals the checkpoint's best score."""
        if score is None:
            return None
        for entry in self.entries:
            value = entry["metrics"].get(monitor)
            if value is not None and math.isclose(value, score, rel_tol=1e-6, abs_tol=1e-9):
                return entry
        return None
