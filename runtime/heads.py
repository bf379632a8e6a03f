"""Output layers (the last module of a decoder). Each takes its output count as
``num_outputs``: ``mtl-make-config`` rewrites that argument when it merges heads.

A head receives the features of the module before it and returns raw outputs with the
output dimension at dim 1 (logits for classification, values for regression); the task
definition (``runtime.tasks``) turns them into loss, metrics and predictions.
"""

from __future__ import annotations

from torch import Tensor, nn


class LinearHead(nn.Module):
    """``[B, F] -> [B, num_outputs]``, with an optional hidden layer.

    Pools sequence/patch features ``[B, T, F]`` by their mean first, so a head can sit on an
    encoder that keeps positions.
    """

    #: the non-linearity after the hidden layer
    hidden_activation: type[nn.Module] = nn.GELU

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        hidden_features: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden_features:
            layers += [nn.Linear(in_features, hidden_features), self.hidden_activation()]
            in_features = hidden_features
        layers.append(nn.Linear(in_features, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() == 3:
            features = features.mean(dim=1)
        return self.net(features)


class ClassificationHead(LinearHead):
    """Logits ``[B, num_outputs]`` for ``ClassificationTask``."""


class MultiLabelHead(LinearHead):
    """Per-label logits ``[B, num_outputs]`` for ``MultiLabelTask``."""


class RegressionHead(LinearHead):
    """Values ``[B, num_outputs]`` for ``RegressionTask``."""


class PerPositionClassificationHead(nn.Module):
    """Logits at every position: ``[B, T, F] -> [B, C, T]`` (frame-wise) or
    ``[B, F, H, W] -> [B, C, H, W]`` (segmentation), C = ``num_outputs``."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_outputs)

    def forward(self, features: Tensor) -> Tensor:
        features = self.dropout(features)
        if features.dim() == 4:  # channels-first image features
            return self.proj(features.movedim(1, -1)).movedim(-1, 1)
        if features.dim() == 3:
            return self.proj(features).transpose(1, 2)
        raise ValueError(
            f"{type(self).__name__} expects [B, T, F] or [B, F, H, W] features, "
            f"got shape {tuple(features.shape)}"
        )


class ProjectionHead(LinearHead):
    """The projection of contrastive learning: ``Linear -> ReLU -> Linear`` to
    ``num_outputs`` dimensions (``ContrastiveTask`` normalizes them). Pools ``[B, T, F]``
    features by their mean first, like :class:`LinearHead`."""

    hidden_activation = nn.ReLU

    def __init__(self, in_features: int, num_outputs: int = 32, hidden_features: int = 64) -> None:
        super().__init__(in_features, num_outputs, hidden_features)


class PerPositionRegressionHead(PerPositionClassificationHead):
    """Values at every position, ``[B, T, F] -> [B, num_outputs, T]``, for
    ``runtime.frame_tasks.FrameRegressionTask``."""
