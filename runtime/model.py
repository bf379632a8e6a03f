"""``MultiTaskModel``: shared encoder (+ optional trunk) feeding per-task or merged decoders.

A plain ``nn.Module`` with no Lightning in it, so it can be exported and used on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack

from torch import Tensor, nn

from runtime.adapters import TaskAdapters
from runtime.lora import StaticLoRA, TaskLoRA
from runtime.task_embedding import TaskEmbedding


class MultiTaskModel(nn.Module):
    """Encoder modules applied in order, an optional trunk, then decoders.

    ``decoders`` maps a decoder name to its modules (the last one is the head). Without
    ``decoder_to_target`` each decoder serves the task of the same name; with it, a decoder
    serves several tasks, and a task listed in ``task_label_offsets`` receives the slice
    ``[offset : offset + num_outputs]`` of its decoder's output (dim 1) - a view, no copy.
    With ``lazy_decode`` only the decoders of the requested tasks run.

    Task conditioning (all optional): ``task_embedding`` gives every task a vector (its rows
    follow ``task_names``); a task-conditioned ``trunk`` (``runtime.trunk.TaskTrunk``) gets
    ``(features, task vector)``; ``task_lora`` adapts the encoder per task (then the encoder
    runs once per task of a batch); ``static_lora`` adds peft LoRA to the encoder;
    ``task_adapters`` inserts per-task bottleneck adapters into the encoder (it runs once per
    task, too). With a task embedding or adapters each requested task is decoded from its own
    features.
    """

    def __init__(
        self,
        encoder: list[nn.Module],
        decoders: dict[str, list[nn.Module]],
        trunk: nn.Module | None = None,
        lazy_decode: bool = True,
        decoder_to_target: dict[str, list[str]] | None = None,
        task_label_offsets: dict[str, dict[str, int]] | None = None,
        task_embedding: TaskEmbedding | None = None,
        task_lora: TaskLoRA | None = None,
        static_lora: StaticLoRA | None = None,
        task_adapters: TaskAdapters | None = None,
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
            self._check_slice(task)
        self.task_embedding = task_embedding
        self.task_lora = task_lora
        self.static_lora = static_lora
        self.task_adapters = task_adapters
        self._bind_task_conditioning()
        # Fixed once built: looked up per step, so computed here, not on every forward.
        self._conditioned_encoder = (
            self.task_lora is not None or self.task_adapters is not None
        ) or any(getattr(m, "task_conditioned", False) for m in self.encoder)
        self._aux_named = [
            (n, m) for n, m in self.named_modules() if callable(getattr(m, "aux_loss", None))
        ]

    def _check_slice(self, task: str) -> None:
        """A task's label slice must lie inside its decoder's outputs (else the first step
        fails on a narrow() deep in training)."""
        offset, width = self.task_slices[task]
        decoder = self.task_to_decoder[task]
        total = getattr(self.decoders[decoder][-1], "num_outputs", None)
        where = f"model.init_args.model.init_args.task_label_offsets.{task}"
        if offset < 0 or width < 1:
            raise ValueError(
                f"{where}: offset must be >= 0 and num_outputs >= 1, got offset "
                f"{offset}, num_outputs {width}"
            )
        if isinstance(total, int) and offset + width > total:
            raise ValueError(
                f"{where}: outputs {offset}:{offset + width} do not fit decoder '{decoder}', "
                f"whose head (decoders.{decoder}[-1]) has num_outputs {total}"
            )

    def _bind_task_conditioning(self) -> None:
        """Give the task-conditioned parts the task list and the embedding size."""
        if self.static_lora is not None:
            self.static_lora.attach(self.encoder)
        if self.task_adapters is not None:
            self.task_adapters.attach(self.encoder, self.task_names)
        needs = ["trunk"] if getattr(self.trunk, "add_embedding", False) else []
        needs += ["task_lora"] if self.task_lora is not None else []
        needs += [
            f"encoder.{i}"
            for i, m in enumerate(self.encoder)
            if getattr(m, "task_conditioned", False)
        ]
        if self.task_embedding is None:
            if needs:
                raise ValueError(
                    f"{', '.join(needs)} need a task embedding: give "
                    "MultiTaskModel a task_embedding (runtime.task_embedding."
                    "TaskEmbedding)"
                )
            return
        dim = self.task_embedding.bind(self.task_names)
        if self.trunk is not None and hasattr(self.trunk, "bind_embedding"):
            self.trunk.bind_embedding(dim)
        if self.task_lora is not None:
            self.task_lora.attach(self.encoder, dim)
        for module in self.encoder:
            if hasattr(module, "bind_embedding"):
                module.bind_embedding(dim)

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

    @property
    def task_conditioned_encoder(self) -> bool:
        """Whether the encoder's output depends on the task (then it runs once per task)."""
        return self._conditioned_encoder

    def _task_vector(self, task: str | None) -> Tensor | None:
        if self.task_embedding is None or task is None:
            return None
        return self.task_embedding(task)

    def _run_encoder(self, inputs: Tensor, embedding: Tensor | None, task: str | None) -> Tensor:
        if not self.task_conditioned_encoder:
            return self.encoder(inputs)
        x = inputs
        with ExitStack() as context:
            if self.task_lora is not None and embedding is not None:
                context.enter_context(self.task_lora.conditioned(embedding))
            if self.task_adapters is not None:
                context.enter_context(self.task_adapters.conditioned(task))
            for module in self.encoder:
                conditioned = getattr(module, "task_conditioned", False)
                x = module(x, embedding) if conditioned else module(x)
        return x

    def _run_trunk(self, features: Tensor, embedding: Tensor | None) -> Tensor:
        if self.trunk is None:
            return features
        if getattr(self.trunk, "task_conditioned", False):
            return self.trunk(features, embedding)
        return self.trunk(features)

    def encode(self, inputs: Tensor, task: str | None = None) -> Tensor:
        """Features for the decoders; ``task`` conditions them when the model is conditioned."""
        embedding = self._task_vector(task)
        return self._run_trunk(self._run_encoder(inputs, embedding, task), embedding)

    @property
    def task_conditioned(self) -> bool:
        """Whether features differ per task (then every requested task decodes on its own)."""
        return self.task_embedding is not None or self.task_adapters is not None

    def forward(self, inputs: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Outputs per task; ``tasks`` selects which (all when None or not lazy)."""
        self.clear_aux_losses()
        wanted = self.task_names if tasks is None or not self.lazy_decode else list(tasks)
        if self.task_conditioned:
            return self._forward_per_task(inputs, wanted)
        features = self.encode(inputs)
        decoded: dict[str, Tensor] = {}
        outputs: dict[str, Tensor] = {}
        for task in wanted:
            name = self.task_to_decoder[task]
            if name not in decoded:
                decoded[name] = self.decoders[name](features)
            outputs[task] = self._task_output(task, decoded[name])
        return outputs

    def _task_output(self, task: str, out: Tensor) -> Tensor:
        if task in self.task_slices:
            offset, width = self.task_slices[task]
            out = out.narrow(1, offset, width)
        return out

    def _forward_per_task(self, inputs: Tensor, wanted: list[str]) -> dict[str, Tensor]:
        """Each task's features from its own embedding; the encoder runs once per task only
        when it is task-conditioned (task LoRA), else once for all."""
        shared = None if self.task_conditioned_encoder else self.encoder(inputs)
        outputs: dict[str, Tensor] = {}
        for task in wanted:
            embedding = self._task_vector(task)
            encoded = shared if shared is not None else self._run_encoder(inputs, embedding, task)
            features = self._run_trunk(encoded, embedding)
            decoded = self.decoders[self.task_to_decoder[task]](features)
            outputs[task] = self._task_output(task, decoded)
        return outputs

    # ---- auxiliary losses (mixture-of-experts load balancing) -------------------------------
    def _aux_modules(self) -> list[tuple[str, nn.Module]]:
        return self._aux_named

    def clear_aux_losses(self) -> None:
        for _, module in self._aux_modules():
            module.clear_aux()

    def aux_losses(self) -> dict[str, Tensor]:
        """Weighted auxiliary losses of the last forward, by module name (read once)."""
        found: dict[str, Tensor] = {}
        for name, module in self._aux_modules():
            loss = module.aux_loss()
            if loss is not None:
                found[name] = loss
        return found


def per_task_tensors(model: nn.Module) -> set[str]:
    """State-dict names of tensors whose dim 0 follows the model's ``task_names``: what
    modules holding per-task rows declare in ``per_task_parameters`` (used to copy or cut
    those rows by task name, e.g. by ``init_from`` and ``mtl-unmerge``)."""
    names = set()
    for prefix, module in model.named_modules():
        for name in getattr(module, "per_task_parameters", ()):
            names.add(f"{prefix}.{name}" if prefix else name)
    return names
