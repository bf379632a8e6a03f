"""Exponential moving average of a module's trainable weights: the arithmetic
(:class:`WeightEMA`) and the callback that runs it during training (:class:`EMAWeights`)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
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

    def params(self) -> list[Tensor]:
        """The live tensors of the tracked parameters (in ``names`` order)."""
        return [p.data for p in self._tracked]

    def _ensure(self) -> list[Tensor]:
        params = self.params()
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


#: checkpoint key of the training weights while ``state_dict`` holds the EMA weights
TRAINING_WEIGHTS_KEY = "ema_training_weights"


class EMAWeights(Callback):
    """Weight EMA of a LightningModule's network, as a callback with its own state.

    Updated after every optimizer step (a skipped update included, as Lightning counts it).
    Validation, test and predict run on the EMA weights; checkpoints store the EMA weights as
    the model weights (what exports and ``mtl-eval`` use) and the training weights beside them
    under ``ema_training_weights``, so ``--resume`` continues exactly.

    ``module`` is the averaged network, ``prefix`` its name in the LightningModule's
    ``state_dict`` (``model.`` for ``MultiTaskModule``). Only the parameters that are
    trainable when the callback is made are averaged.

    Not Lightning's ``EMAWeightAveraging``: that one deep-copies the whole LightningModule
    (frozen encoders, buffers, metric states included), averages buffers too, averages only
    for validation, leaves the averaged weights in the module after fit and stores
    checkpoints under other keys, so existing run directories would no longer resume.
    """

    def __init__(self, module: nn.Module, decay: float, prefix: str = "model.") -> None:
        self.ema = WeightEMA(module, decay)
        self.prefix = prefix
        self._stepped = 0  # the optimizer step the EMA last followed

    # ---- updates -------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stepped = trainer.global_step  # restored by now when resuming

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step != self._stepped:  # no step on accumulating batches
            self._stepped = trainer.global_step
            self.ema.update()

    # ---- evaluation on the EMA weights ---------------------------------------------------
    def swap_in(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put the EMA weights into the network (if not already there)."""
        if not self.ema.swapped:
            self.ema.swap()

    def swap_out(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Put the training weights back (if the EMA weights are in)."""
        if self.ema.swapped:
            self.ema.swap()

    on_validation_start = on_test_start = on_predict_start = swap_in
    on_validation_end = on_test_end = on_predict_end = swap_out

    # ---- checkpoints ---------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.ema.shadow is None:
            return
        ema, training = self.ema.ema_and_training_weights()
        state = checkpoint["state_dict"]
        for name in self.ema.names:
            state[self.prefix + name] = ema[name].detach().clone()
        checkpoint[TRAINING_WEIGHTS_KEY] = {
            self.prefix + n: t.detach().clone() for n, t in training.items()
        }

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Lightning has loaded ``state_dict`` (the EMA weights) into the module by now: they
        become the shadow, and the training weights go back into the module."""
        if TRAINING_WEIGHTS_KEY not in checkpoint:
            return
        state = checkpoint["state_dict"]
        self.ema.load({n: state[self.prefix + n] for n in self.ema.names})
        training = checkpoint[TRAINING_WEIGHTS_KEY]
        with torch.no_grad():
            for name, param in zip(self.ema.names, self.ema.params(), strict=True):
                param.copy_(training[self.prefix + name])
