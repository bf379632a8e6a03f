"""One vector per task: learned, or precomputed by ``mtl-task-embeds`` and read from its file.

The table's rows follow the owning ``MultiTaskModel``'s ``task_names`` (it calls :meth:`bind`),
so the module declares ``per_task_parameters`` and ``mtl-unmerge`` / an isolate fine-tune can
copy rows by task name. A precomputed table is a buffer (fixed) unless ``trainable`` is set; it
is stored in checkpoints either way, so a trained model does not need the file to be reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from runtime.config_errors import ConfigError


class TaskEmbedding(nn.Module):
    """Task vectors ``[num_tasks, dim]`` for task-conditioned modules.

    Args:
        dim: size of learned vectors (ignored with ``path``: the file's size is used).
        path: an ``mtl-task-embeds`` file; every task of the model must have a row in it.
        trainable: train the precomputed vectors too (learned vectors always train).
        init_std: standard deviation of the learned vectors' normal initialisation.
    """

    per_task_parameters: tuple[str, ...] = ("weight",)

    def __init__(
        self,
        dim: int | None = None,
        path: str | None = None,
        trainable: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if path is None and (dim is None or dim < 1):
            raise ValueError(
                "TaskEmbedding needs a positive dim (learned) or a path "
                "(precomputed by mtl-task-embeds)"
            )
        self.path = path
        self.dim = dim
        self.trainable = trainable or path is None
        self.init_std = init_std
        self.task_names: list[str] = []
        #: What the ``mtl-task-embeds`` file says of itself (model, options, text hashes), for
        #: the run's records; None for learned vectors.
        self.source_metadata: dict[str, Any] | None = None

    def bind(self, task_names: list[str]) -> int:
        """Create the table for the model's tasks (row order = ``task_names``); returns dim."""
        self.task_names = list(task_names)
        if self.path is not None:
            from compiler.errors import ConfigError as AnyConfigError
            from runtime.embeds_file import load_task_embeddings

            try:
                table, meta = load_task_embeddings(Path(self.path), self.task_names)
            except AnyConfigError as exc:  # re-raised as mtl-run's kind: exit 2, no traceback
                raise ConfigError(f"TaskEmbedding.path: {exc}") from None
            hashes = meta.get("text_sha256") or {}
            self.source_metadata = {
                "path": self.path,
                **{k: meta.get(k) for k in ("format", "model", "dimension", "options")},
                "text_sha256": {t: hashes.get(t) for t in self.task_names},
            }
        else:
            table = torch.randn(len(task_names), int(self.dim)) * self.init_std
        self.dim = int(table.shape[1])
        if hasattr(self, "weight"):
            delattr(self, "weight")
        if self.trainable:
            self.weight = nn.Parameter(table)
        else:
            self.register_buffer("weight", table)
        return self.dim

    def index(self, task: str) -> int:
        try:
            return self.task_names.index(task)
        except ValueError:
            raise KeyError(f"no task embedding for {task!r}; tasks: {self.task_names}") from None

    def forward(self, task: str) -> Tensor:
        """The vector ``[dim]`` of ``task``."""
        return self.weight[self.index(task)]

    def extra_repr(self) -> str:
        kind = f"precomputed from {self.path}" if self.path else "learned"
        return f"tasks={len(self.task_names)}, dim={self.dim}, {kind}, trainable={self.trainable}"
