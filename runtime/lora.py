"""Low-rank adapters on the encoder's linear layers: per task (``TaskLoRA``) or static
(``StaticLoRA``, through peft).

``TaskLoRA`` generates each target layer's ``A [r, in]`` and ``B [out, r]`` from the task's
embedding with a small hypernetwork and adds ``scale * x A^T B^T`` to the layer's output
through a forward hook, so the encoder's own tensor names do not change (a plain checkpoint
loads into a model with task LoRA and back). The B generator starts at zero: at
initialisation the encoder gives exactly its plain output, and training moves away from it.
Hooks also keep PyTorch's fused ``TransformerEncoderLayer`` inference path off, so adapters
on ``linear1`` / ``linear2`` apply in eval mode too.

``StaticLoRA`` injects peft LoRA layers (``peft.inject_adapter_in_model``) into the encoder;
peft freezes the base weights unless ``train_base`` is set. ``mtl-ckpt-convert
--merge-adapters`` folds them into plain linear layers.

Both keep an ``enabled`` switch (a buffer, so a checkpoint remembers whether a fine-tuning
stage had switched the adapters on): switched off, the encoder is the plain encoder.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from runtime.compat import set_adapter_disabled


def match_modules(
    root: nn.Module,
    targets: list[str],
    kind: type = nn.Linear,
    what: str = "LoRA",
) -> list[str]:
    """Names of ``kind`` submodules of ``root`` matching ``targets``: a full name, a dotted
    suffix (``linear1`` matches ``layers.0.linear1``) or a glob (``net.*``)."""
    candidates = [n for n, m in root.named_modules() if n and isinstance(m, kind)]
    kind_name = kind.__name__
    chosen: list[str] = []
    for target in targets:
        hits = [
            n
            for n in candidates
            if n == target or n.endswith("." + target) or fnmatch.fnmatchcase(n, target)
        ]
        if not hits:
            raise ValueError(
                f"{what} target {target!r} matches no {kind_name} layer of the encoder; "
                f"its {kind_name} layers are: {', '.join(candidates) or 'none'}"
            )
        chosen += [n for n in hits if n not in chosen]
    return chosen


class AdapterSwitch(nn.Module):
    """An on/off flag kept as a buffer (saved in checkpoints) with a Python mirror."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.register_buffer("enabled", torch.tensor(bool(enabled)))
        self._on = bool(enabled)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._reload())

    def _reload(self) -> None:
        self.set_enabled(bool(self.enabled))

    @property
    def is_enabled(self) -> bool:
        return self._on

    def set_enabled(self, on: bool) -> None:
        self._on = bool(on)
        self.enabled.fill_(self._on)


class TaskLoRA(AdapterSwitch):
    """Task-generated LoRA on the encoder's linear layers named by ``target_modules``.

    Args:
        target_modules: layer names inside the encoder list (``0.net.0``), dotted suffixes
            (``linear1``) or globs (``*.net.*``); every one must match a ``nn.Linear``.
        rank: the adapters' rank r.
        hidden_size: the hypernetwork's hidden size.
        alpha: the update is scaled by ``alpha / rank`` (default: ``rank``, scale 1).
        enabled: start switched on (a fine-tuning stage can switch it on later).
    """

    def __init__(
        self,
        target_modules: list[str],
        rank: int = 4,
        hidden_size: int = 64,
        alpha: float | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(enabled)
        if not target_modules:
            raise ValueError("TaskLoRA.target_modules must name at least one linear layer")
        if rank < 1 or hidden_size < 1:
            raise ValueError(
                f"TaskLoRA rank and hidden_size must be >= 1, got {rank}, {hidden_size}"
            )
        self.target_modules = list(target_modules)
        self.rank, self.hidden_size = rank, hidden_size
        self.scale = (alpha if alpha is not None else rank) / rank
        self.layer_names: list[str] = []
        self._shapes: list[tuple[int, int]] = []
        self._current: list[tuple[Tensor, Tensor]] | None = None

    def attach(self, encoder: nn.Module, embedding_dim: int) -> None:
        """Find the target layers, build the hypernetwork and hook the layers."""
        if self.layer_names:
            raise RuntimeError("TaskLoRA is already attached to an encoder")
        self.layer_names = match_modules(encoder, self.target_modules)
        layers = [encoder.get_submodule(n) for n in self.layer_names]
        self._shapes = [(layer.in_features, layer.out_features) for layer in layers]
        r = self.rank
        self.body = nn.Sequential(nn.Linear(embedding_dim, self.hidden_size), nn.GELU())
        self.to_a = nn.Linear(self.hidden_size, r * sum(i for i, _ in self._shapes))
        self.to_b = nn.Linear(self.hidden_size, r * sum(o for _, o in self._shapes))
        nn.init.zeros_(self.to_b.weight)  # B = 0: the encoder starts as the plain encoder
        nn.init.zeros_(self.to_b.bias)
        for i, layer in enumerate(layers):
            layer.register_forward_hook(self._hook(i))  # for the model's lifetime

    def adapters(self, task_embedding: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per target layer ``(A [r, in], B [out, r])`` for one task vector."""
        h = self.body(task_embedding)
        r = self.rank
        a_parts = self.to_a(h).split([r * i for i, _ in self._shapes])
        b_parts = self.to_b(h).split([r * o for _, o in self._shapes])
        return [
            (a.view(r, i), b.view(o, r))
            for a, b, (i, o) in zip(a_parts, b_parts, self._shapes, strict=True)
        ]

    @contextmanager
    def conditioned(self, task_embedding: Tensor) -> Iterator[None]:
        """Within the block, the hooked layers add this task's low-rank update."""
        if not self._on:
            yield
            return
        self._current = self.adapters(task_embedding)
        try:
            yield
        finally:
            self._current = None

    def _hook(self, index: int):
        def add_update(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            if self._current is None:
                return output
            a, b = self._current[index]
            return output + self.scale * ((inputs[0] @ a.T) @ b.T)

        return add_update

    def extra_repr(self) -> str:
        return (
            f"layers={self.layer_names}, rank={self.rank}, hidden_size={self.hidden_size}, "
            f"enabled={self._on}"
        )


class StaticLoRA(AdapterSwitch):
    """peft LoRA (the same for every task) on the encoder's layers named by ``target_modules``.

    Args:
        target_modules: encoder layers, named as for ``TaskLoRA`` (names, suffixes, globs).
        rank, alpha, dropout: peft's ``r``, ``lora_alpha`` and ``lora_dropout``.
        train_base: keep training the encoder's own weights (peft freezes them otherwise).
        enabled: start switched on (a fine-tuning stage can switch it on later).
    """

    def __init__(
        self,
        target_modules: list[str],
        rank: int = 4,
        alpha: float = 8.0,
        dropout: float = 0.0,
        train_base: bool = False,
        enabled: bool = True,
    ) -> None:
        super().__init__(enabled)
        self.target_modules = list(target_modules)
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.train_base = train_base
        self._layers: list[nn.Module] = []

    def attach(self, encoder: nn.Module) -> None:
        """Inject the peft layers into ``encoder`` (in place)."""
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
        names = match_modules(encoder, self.target_modules)  # globs, and clear errors
        config = LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=names
        )
        inject_adapter_in_model(config, encoder)
        if self.train_base:
            for name, param in encoder.named_parameters():
                if name.replace(".base_layer", "") in trainable:
                    param.requires_grad_(True)
        self._layers = [m for m in encoder.modules() if isinstance(m, BaseTunerLayer)]
        self._reload()

    def set_enabled(self, on: bool) -> None:
        super().set_enabled(on)
        for layer in getattr(self, "_layers", []):
            set_adapter_disabled(layer, not self._on)  # without touching requires_grad


def adapter_switches(model: nn.Module) -> list[AdapterSwitch]:
    """Every adapter on/off switch inside ``model``."""
    return [m for m in model.modules() if isinstance(m, AdapterSwitch)]
