"""``MultiTaskModel``: shared encoder (+ optional trunk) feeding per-task or merged decoders.

A plain ``nn.Module`` with no Lightning in it, so it can be exported and used on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn


class MultiTaskModel(nn.Module):
    """Encoder modules applied in order, an optional trunk, then decoders.

    ``decoders`` maps a decoder name to its modules (the last one is the head). Without
    ``decoder_to_target`` each decoder serves the task of the same name; with it, a decoder
    serves several tasks, and a task listed in ``task_label_offsets`` receives the slice
    ``[offset : offset + num_outputs]`` of its decoder's output (dim 1) - a view, no copy.
    With ``lazy_decode`` only the decoders of the requested tasks run.
    """

    def __init__(
        self,
        encoder: list[nn.Module],
        decoders: dict[str, list[nn.Module]],
        trunk: nn.Module | None = None,
        lazy_decode: bool = True,
        decoder_to_target: dict[str, list[str]] | None = None,
        task_label_offsets: dict[str, dict[str, int]] | None = None,
    ) -> None:
        super().__init__()
        if not decoders:
            raise ValueError("MultiTaskModel.decoders is empty: give at least one decoder")
        self.encoder = nn.Sequential(*encoder)
        self.trunk = trunk
        self.decoders = nn.ModuleDict(
            {name: nn.Sequential(*mods) for name, mods in decoders.items()}
        )
        self.lazy_decode = lazy_decode
        routing = decoder_to_target or {name: [name] for name in decoders}
        unknown = sorted(set(routing) - set(decoders))
        if unknown:
            raise ValueError(f"decoder_to_target names decoders that do not exist: {unknown}")
        self.task_to_decoder: dict[str, str] = {}
        for decoder, tasks in routing.items():
            for task in tasks:
                if task in self.task_to_decoder:
                    raise ValueError(f"task {task!r} is served by two decoders")
                self.task_to_decoder[task] = decoder
        self.task_slices: dict[str, tuple[int, int]] = {}
        for task, block in (task_label_offsets or {}).items():
            if task not in self.task_to_decoder:
                raise ValueError(f"task_label_offsets names unknown task {task!r}")
            if set(block) != {"offset", "num_outputs"}:
                raise ValueError(
                    f"task_label_offsets.{task} needs exactly offset and num_outputs, "
                    f"got {sorted(block)}"
                )
            self.task_slices[task] = (int(block["offset"]), int(block["num_outputs"]))

    @property
    def task_names(self) -> list[str]:
        return list(self.task_to_decoder)

    def head(self, task: str) -> nn.Module:
        """The output layer serving ``task``."""
        return self.decoders[self.task_to_decoder[task]][-1]

    def task_num_outputs(self, task: str) -> int | None:
        """Outputs the task receives, when the head tells its ``num_outputs``."""
        if task in self.task_slices:
            return self.task_slices[task][1]
        return getattr(self.head(task), "num_outputs", None)

    def encode(self, inputs: Tensor) -> Tensor:
        features = self.encoder(inputs)
        return self.trunk(features) if self.trunk is not None else features

    def forward(self, inputs: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Outputs per task; ``tasks`` selects which (all when None or not lazy)."""
        features = self.encode(inputs)
        wanted = self.task_names if tasks is None or not self.lazy_decode else list(tasks)
        decoded: dict[str, Tensor] = {}
        outputs: dict[str, Tensor] = {}
        for task in wanted:
            name = self.task_to_decoder[task]
            if name not in decoded:
                decoded[name] = self.decoders[name](features)
            out = decoded[name]
            if task in self.task_slices:
                offset, width = self.task_slices[task]
                out = out.narrow(1, offset, width)
            outputs[task] = out
        return outputs
