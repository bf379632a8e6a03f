"""Learning-rate schedules stepped once per optimizer step."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosine(LRScheduler):
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``.

    ``total_steps`` defaults to the trainer's estimated number of optimizer steps
    (``MultiTaskModule`` fills it in), so configs need not know the dataset size.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.derived_total = False
        super().__init__(optimizer, last_epoch)

    def derive_total_steps(self, total_steps: int) -> None:
        """Take the trainer's step count; it stays authoritative over a resumed state, so
        resuming with a larger ``max_epochs`` stretches the schedule instead of ending it."""
        self.total_steps = total_steps
        self.derived_total = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        total, derived = self.total_steps, self.derived_total
        super().load_state_dict(state_dict)
        if derived:
            self.total_steps, self.derived_total = total, True

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.total_steps or self.total_steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
