"""The task-conditioned decoder trunk: between the encoder and the decoders.

``TaskTrunk`` adds the task's embedding to the features (through a learned projection when
the sizes differ, broadcast over positions of ``[B, T, F]`` features), then runs its layers.
A layer with ``task_conditioned = True`` (``MoETransformerBlock``, ``MoEFeedForward``,
``TaskFiLM``) is called as ``layer(x, task_embedding)``, any other module as ``layer(x)``.
The model binds the embedding size (:meth:`TaskTrunk.bind_embedding`) once it is known, so
configs need not repeat the size of a precomputed embeddings file.
"""

from __future__ import annotations

from torch import Tensor, nn

from runtime.protocols import EmbeddingConsumer, is_task_conditioned


class TaskFiLM(nn.Module):
    """``x * (1 + gamma(e)) + beta(e)``: a per-task affine modulation, identity at start."""

    task_conditioned = True

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.film: nn.Linear | None = None

    def bind_embedding(self, embedding_dim: int) -> None:
        if self.film is None:
            self.film = nn.Linear(embedding_dim, 2 * self.features)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, task_embedding: Tensor) -> Tensor:
        if self.film is None:
            raise RuntimeError("TaskFiLM needs a task embedding: use it inside a TaskTrunk")
        gamma, beta = self.film(task_embedding).chunk(2, dim=-1)
        return x * (1 + gamma) + beta


class TaskTrunk(nn.Module):
    """Task embedding added to the features, then task-conditioned layers.

    Args:
        in_features: the encoder's feature size (dim -1 of its output).
        layers: modules applied in order (e.g. ``runtime.moe.MoETransformerBlock``).
        add_embedding: add the (projected) task embedding to the features first.
    """

    task_conditioned = True

    def __init__(
        self,
        in_features: int,
        layers: list[nn.Module] | None = None,
        add_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.add_embedding = add_embedding
        self.layers = nn.ModuleList(layers or [])
        self._conditioned = [is_task_conditioned(layer) for layer in self.layers]
        self.project: nn.Module | None = None

    def bind_embedding(self, embedding_dim: int) -> None:
        """Create the projection (identity when sizes match) and the layers' task parts."""
        if self.project is None:
            self.project = (
                nn.Identity()
                if embedding_dim == self.in_features
                else nn.Linear(embedding_dim, self.in_features)
            )
        for layer in self.layers:
            if isinstance(layer, EmbeddingConsumer):
                layer.bind_embedding(embedding_dim)

    def forward(self, features: Tensor, task_embedding: Tensor) -> Tensor:
        x = features
        if self.add_embedding:
            if self.project is None:
                raise RuntimeError(
                    "TaskTrunk is not bound to a task embedding (give the "
                    "MultiTaskModel a task_embedding)"
                )
            shift = self.project(task_embedding)
            if x.dim() == 4:  # channels-first maps [B, C, H, W]
                shift = shift[:, None, None]
            x = x + shift
        for layer, conditioned in zip(self.layers, self._conditioned, strict=True):
            x = layer(x, task_embedding) if conditioned else layer(x)
        return x
