"""Exponential moving average of a module's trainable weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from runtime.compat import foreach_lerp_


class WeightEMA:
    """Shadow copies of trainable parameters, updated after every optimizer step.

    ``swap()`` exchanges the live weights with the shadow in place (the parameter objects
    stay), so the same call puts EMA weights in for evaluation and the training weights back.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        tracked = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in tracked]
        self._tracked = [p for _, p in tracked]  # moving or loading keeps these objects
        self.shadow: list[Tensor] | None = None
        self.swapped = False

    def _params(self) -> list[Tensor]:
        return [p.data for p in self._tracked]

    def _ensure(self) -> list[Tensor]:
        params = self._params()
        if self.shadow is None:
            self.shadow = [p.detach().clone() for p in params]
        elif self.shadow and self.shadow[0].device != params[0].device:
            self.shadow = [s.to(p.device) for s, p in zip(self.shadow, params, strict=True)]
        return params

    @torch.no_grad()
    def update(self) -> None:
        params = self._ensure()
        if self.swapped:
            raise RuntimeError("EMA update while EMA weights are swapped in")
        foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        if self.shadow is None:
            return
        params = self._ensure()
        for live, shadow in zip(params, self.shadow, strict=True):
            tmp = live.clone()
            live.copy_(shadow)
            shadow.copy_(tmp)
        self.swapped = not self.swapped

    def ema_and_training_weights(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(EMA weights, training weights) by parameter name, wherever they currently live."""
        params = self._ensure()
        assert self.shadow is not None
        live = dict(zip(self.names, params, strict=True))
        shadow = dict(zip(self.names, self.shadow, strict=True))
        return (live, shadow) if self.swapped else (shadow, live)

    def load(self, ema_weights: dict[str, Tensor]) -> None:
        """Set the shadow (training weights are loaded into the module by the caller)."""
        self.shadow = [ema_weights[n].detach().clone() for n in self.names]
        self.swapped = False
