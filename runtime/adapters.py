"""Per-task bottleneck adapters inserted after chosen encoder layers (Houlsby et al., 2019).

After each target layer, a task's adapter adds ``up(act(down(h)))`` to the layer's output
``h`` (a bottleneck of ``bottleneck`` features). Each task listed in ``tasks`` owns one adapter
per target layer; other tasks pass through unchanged. ``up`` starts at zero, so at
initialisation the encoder gives exactly its plain output.

The adapters are forward hooks, so the encoder's own tensor names do not change, and they are
stored per task name (``task_adapters.adapters.<task>.<layer>.down.weight``): ``mtl-unmerge``
keeps the chosen task's adapters by name and drops the others, and an isolate fine-tune copies
the adapters of tasks both runs share. The model tells which task it is computing through
:meth:`TaskAdapters.conditioned` (the encoder then runs once per task of a batch, as with task
LoRA). The ``enabled`` switch is the one ``runtime.lora`` adapters have, so fine-tuning stages
(``adapters: true|false``) switch these too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from torch import Tensor, nn

from runtime.encoders import ACTIVATIONS
from runtime.lora import AdapterSwitch, match_modules


class BottleneckAdapter(nn.Module):
    """``h + up(dropout(act(down(h))))`` over the last dimension; ``up`` starts at zero."""

    def __init__(
        self,
        features: int,
        bottleneck: int,
        dropout: float = 0.0,
        activation: Literal["relu", "gelu", "tanh"] = "gelu",
    ) -> None:
        super().__init__()
        self.down = nn.Linear(features, bottleneck)
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, features)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.dropout(self.act(self.down(h))))


def output_features(module: nn.Module) -> int | None:
    """The size of ``module``'s output's last dimension, when the module tells it."""
    base = getattr(module, "get_base_layer", None)  # a peft-wrapped layer: ask the layer
    if callable(base) and base() is not module:
        return output_features(base())
    for attr in ("out_features", "embed_dim", "d_model", "num_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    children = list(module.children())  # a block: what its last layer gives
    return output_features(children[-1]) if children else None


class TaskAdapters(AdapterSwitch):
    """Bottleneck adapters after the encoder layers named by ``target_modules``, one set per task.

    Args:
        target_modules: encoder layers whose output is adapted: names inside the encoder list
            (``0.layers.layers.0.linear2``), dotted suffixes (``self_attn``) or globs, as for
            LoRA; any module kind. A layer returning a tuple (``nn.MultiheadAttention``) has
            its first element adapted.
        bottleneck: the adapters' hidden size.
        tasks: the tasks that get adapters (default: every task of the model); the others run
            the plain encoder.
        dropout: dropout inside the adapters.
        activation: the bottleneck's non-linearity.
        features: the target layers' output size, when it cannot be read from the layers.
        enabled: start switched on (a fine-tuning stage can switch it on later).
    """

    def __init__(
        self,
        target_modules: list[str],
        bottleneck: int = 16,
        tasks: list[str] | None = None,
        dropout: float = 0.0,
        activation: Literal["relu", "gelu", "tanh"] = "gelu",
        features: int | None = None,
        enabled: bool = True,
    ) -> None:
        super().__init__(enabled)
        if not target_modules:
            raise ValueError("TaskAdapters.target_modules must name at least one encoder layer")
        if bottleneck < 1:
            raise ValueError(f"TaskAdapters.bottleneck must be >= 1, got {bottleneck}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TaskAdapters.dropout must lie in [0, 1), got {dropout}")
        if features is not None and features < 1:
            raise ValueError(f"TaskAdapters.features must be >= 1, got {features}")
        self.target_modules = list(target_modules)
        self.bottleneck, self.dropout, self.activation = bottleneck, dropout, activation
        self.features = features
        self.tasks = None if tasks is None else list(dict.fromkeys(tasks))
        self.layer_names: list[str] = []
        self.adapters = nn.ModuleDict()
        self._task: str | None = None

    def attach(self, encoder: nn.Module, task_names: list[str]) -> None:
        """Find the target layers, build each adapted task's adapters and hook the layers."""
        if self.layer_names:
            raise RuntimeError("TaskAdapters is already attached to an encoder")
        chosen = task_names if self.tasks is None else self.tasks
        unknown = [t for t in chosen if t not in task_names]
        if unknown:
            raise ValueError(
                f"TaskAdapters.tasks names {unknown}, which are not tasks of the model; "
                f"its tasks: {', '.join(task_names)}"
            )
        names = match_modules(encoder, self.target_modules, nn.Module, "adapter")
        sizes = []
        for name in names:
            size = self.features or output_features(encoder.get_submodule(name))
            if size is None:
                raise ValueError(
                    f"TaskAdapters cannot tell the output size of encoder layer {name!r} "
                    f"({type(encoder.get_submodule(name)).__name__}): set features"
                )
            sizes.append(size)
        self.layer_names = names
        for task in chosen:
            self.adapters[task] = nn.ModuleList(
                BottleneckAdapter(size, self.bottleneck, self.dropout, self.activation)
                for size in sizes
            )
        for i, name in enumerate(names):
            encoder.get_submodule(name).register_forward_hook(self._hook(i))

    @property
    def adapted_tasks(self) -> list[str]:
        """The tasks that own adapters."""
        return list(self.adapters)

    @contextmanager
    def conditioned(self, task: str | None) -> Iterator[None]:
        """Within the block, the hooked layers apply ``task``'s adapters (if it has any)."""
        self._task = task if self._on and task in self.adapters else None
        try:
            yield
        finally:
            self._task = None

    def _hook(self, index: int):
        def adapt(_module: nn.Module, _inputs: tuple[Any, ...], output: Any) -> Any:
            if self._task is None:
                return output
            adapter = self.adapters[self._task][index]
            if isinstance(output, tuple):
                return (adapter(output[0]), *output[1:])
            return adapter(output)

        return adapt

    def extra_repr(self) -> str:
        return (
            f"layers={self.layer_names}, bottleneck={self.bottleneck}, "
            f"tasks={self.adapted_tasks}, enabled={self._on}"
        )
