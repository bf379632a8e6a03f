"""Multi-stage fine-tuning: freeze / unfreeze modules, scale learning rates and switch
adapters on at chosen epochs.

Selectors name parts of the ``MultiTaskModel`` by parameter-name prefix at a dot boundary
(``encoder``, ``decoders.parity``, ``task_embedding``, ``trunk.layers.0``) or by glob
(``encoder.*.bias``, ``*lora*``); a leading ``model.`` is allowed. A selector matching no
parameter is an error. Learning-rate scales are relative to the configured learning rate
(``1.0`` restores it): every selector used in an ``lr_scale`` mapping gets its own optimizer
parameter group (the callback manages its groups: its ``setup`` hook hands
:meth:`FineTuneStages.param_groups` to ``MultiTaskModule``'s optimizer), and ``*`` or
a bare number scales every group. A stage applies at the start of its epoch; the stage reached
is saved in checkpoints, so a resumed run re-applies the freezing and adapter switches of
every stage up to it (learning rates come back with the optimizer and scheduler states).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from runtime.lora import adapter_switches
from runtime.protocols import ScalesBaseLrs, TakesParamGroups, inner_model

ALL = "*"


@dataclass
class FineTuneStage:
    """What changes when epoch ``epoch`` starts.

    Args:
        epoch: the (0-based) epoch at whose start the stage applies.
        freeze: selectors of parameters to stop training.
        unfreeze: selectors of parameters to train again.
        lr_scale: a factor for every parameter group, or selector -> factor.
        adapters: switch every adapter (task and static LoRA) on (true) or off (false).
    """

    epoch: int
    freeze: list[str] = field(default_factory=list)
    unfreeze: list[str] = field(default_factory=list)
    lr_scale: float | dict[str, float] | None = None
    adapters: bool | None = None

    def scales(self) -> dict[str, float]:
        if self.lr_scale is None:
            return {}
        if isinstance(self.lr_scale, dict):
            return dict(self.lr_scale)
        return {ALL: float(self.lr_scale)}


def select(model: nn.Module, selector: str) -> list[str]:
    """Names of ``model``'s parameters that ``selector`` picks (see the module docstring)."""
    pattern = selector.removeprefix("model.")
    names = [n for n, _ in model.named_parameters()]
    if pattern == ALL:
        return names
    return [
        n
        for n in names
        if n == pattern or n.startswith(pattern + ".") or fnmatch.fnmatchcase(n, pattern)
    ]


class FineTuneStages(Callback):
    """Stages of a fine-tuning schedule (a Lightning callback; put it in ``trainer.callbacks``).

    Args:
        stages: the stages, applied in epoch order (see :class:`FineTuneStage`).
    """

    def __init__(self, stages: list[FineTuneStage]) -> None:
        super().__init__()
        if not stages:
            raise ValueError("FineTuneStages.stages is empty: give at least one stage")
        self.stages = sorted(
            (s if isinstance(s, FineTuneStage) else FineTuneStage(**s) for s in stages),
            key=lambda s: s.epoch,
        )
        #: how many stages have been applied (saved in checkpoints)
        self.applied = 0
        #: current learning-rate factor per group selector (saved in checkpoints)
        self.scales: dict[str, float] = {}
        self._checked = False

    # ---- selectors and optimizer groups -----------------------------------------------------
    def group_selectors(self) -> list[str]:
        """Selectors that need their own parameter group, in order of first use."""
        seen: list[str] = []
        for stage in self.stages:
            seen += [k for k in stage.scales() if k != ALL and k not in seen]
        return seen

    def _check(self, model: nn.Module) -> None:
        if self._checked:
            return
        for i, stage in enumerate(self.stages):
            for kind, selectors in (
                ("freeze", stage.freeze),
                ("unfreeze", stage.unfreeze),
                ("lr_scale", [k for k in stage.scales() if k != ALL]),
            ):
                for selector in selectors:
                    if not select(model, selector):
                        top = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
                        raise ValueError(
                            f"FineTuneStages.stages[{i}].{kind}: {selector!r} matches no "
                            f"parameter of the model (its parts: {', '.join(top)})"
                        )
            if stage.adapters is not None and not adapter_switches(model):
                raise ValueError(
                    f"FineTuneStages.stages[{i}].adapters: the model has no "
                    "adapters (task_lora / static_lora) to switch"
                )
        self._checked = True

    def param_groups(self, module: LightningModule) -> list[dict[str, Any]]:
        """Trainable parameters split into one group per ``lr_scale`` selector (+ the rest)."""
        model = inner_model(module)
        self._check(model)
        prefix = "model." if model is not module else ""
        owner: dict[str, str] = {}
        for selector in self.group_selectors():
            for name in select(model, selector):
                owner.setdefault(prefix + name, selector)
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in module.named_parameters():
            if param.requires_grad:
                groups.setdefault(owner.get(name, ALL), []).append(param)
        return [{"params": params, "stage_group": key} for key, params in groups.items()]

    # ---- hooks ------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Parameters a stage will unfreeze must be in the optimizer: mark them trainable
        before it is built (the first stage's freezing is applied once it exists)."""
        if stage != "fit":
            return
        model = inner_model(pl_module)
        self._check(model)
        if isinstance(pl_module, TakesParamGroups):
            pl_module.param_group_splitter = self  # its optimizer gets this callback's groups
        params = dict(model.named_parameters())
        for st in self.stages:
            for selector in st.unfreeze:
                for name in select(model, selector):
                    params[name].requires_grad_(True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Hand the optimizer's grouping back once this fit ends (a later fit without the
        callback groups nothing)."""
        if isinstance(pl_module, TakesParamGroups) and pl_module.param_group_splitter is self:
            pl_module.param_group_splitter = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Re-apply the structure (frozen parts, adapter switches) of the stages reached."""
        for stage in self.stages[: self.applied]:
            self._apply_structure(inner_model(pl_module), stage)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        while (
            self.applied < len(self.stages)
            and self.stages[self.applied].epoch <= trainer.current_epoch
        ):
            stage = self.stages[self.applied]
            self._apply_structure(inner_model(pl_module), stage)
            self._apply_scales(trainer, stage)
            self.applied += 1

    def _apply_structure(self, model: nn.Module, stage: FineTuneStage) -> None:
        params = dict(model.named_parameters())
        for flag, selectors in ((False, stage.freeze), (True, stage.unfreeze)):
            for selector in selectors:
                for name in select(model, selector):
                    params[name].requires_grad_(flag)
        if stage.adapters is not None:
            for switch in adapter_switches(model):
                switch.set_enabled(stage.adapters)

    def _apply_scales(self, trainer: Trainer, stage: FineTuneStage) -> None:
        wanted = stage.scales()
        if not wanted:
            return
        for optimizer in trainer.optimizers:
            schedulers = [
                c.scheduler
                for c in trainer.lr_scheduler_configs
                if c.scheduler.optimizer is optimizer
            ]
            for i, group in enumerate(optimizer.param_groups):
                key = group.get("stage_group", ALL)
                new = wanted.get(key, wanted.get(ALL))
                if new is None:
                    continue
                ratio = new / self.scales.get(key, 1.0)
                group["lr"] *= ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
                for scheduler in schedulers:
                    if isinstance(scheduler, ScalesBaseLrs):
                        scheduler.base_lrs[i] *= ratio
        groups = {g.get("stage_group", ALL) for o in trainer.optimizers for g in o.param_groups}
        for key in groups:
            new = wanted.get(key, wanted.get(ALL))
            if new is not None:
                self.scales[key] = new

    # ---- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "scales": dict(self.scales)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.applied = int(state_dict["applied"])
        self.scales = dict(state_dict["scales"])
