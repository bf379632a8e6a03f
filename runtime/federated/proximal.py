"""FedProx's client side: the proximal term ``mu/2 * ||w - w_global||^2`` as a callback.

Its gradient ``mu * (w - w_global)`` is added to each travelling parameter's gradient after
the backward pass, so any loss, balancer or optimizer of the run works unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class ProximalTerm(Callback):
    """Pull the local weights towards the round's global weights (FedProx).

    Args:
        reference: a ``torch.save`` file of the global tensors (model names, no prefix).
        mu: the proximal weight; 0 turns the term off.
    """

    def __init__(self, reference: str, mu: float) -> None:
        self.reference = Path(reference)
        self.mu = mu
        self._global: dict[str, Tensor] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.mu or not self.reference.exists():
            self._global = {}
            return
        tensors = torch.load(self.reference, map_location=pl_module.device, weights_only=True)
        self._global = {k: v.detach() for k, v in tensors.items()}

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model: Any = getattr(pl_module, "model", pl_module)
        for name, param in model.named_parameters():
            target = self._global.get(name)
            if target is not None and param.grad is not None:
                param.grad.add_(param.detach() - target.to(param.dtype), alpha=self.mu)
