"""Ready-made encoders. An encoder module receives the previous module's output (the first
one receives ``batch["inputs"]``) and returns features for the next one.

Shapes: ``MLPEncoder`` ``[B, F] -> [B, H]`` (also ``[B, T, F] -> [B, T, H]``);
``TransformerEncoder`` ``[B, T, F]`` or images ``[B, C, H, W]`` (cut into patches) ->
``[B, D]`` pooled or ``[B, T, D]`` with ``pool: none``; ``CNNEncoder`` ``[B, C, H, W]`` ->
``[B, channels[-1]]`` pooled or ``[B, channels[-1], H', W']`` with ``pool: none``.

Each takes ``init_checkpoint``: initial weights from a converted checkpoint (a DCP folder, a
``.safetensors`` file or a torch state dict; see :mod:`runtime.init_checkpoint`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from runtime.init_checkpoint import load_init_checkpoint

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLPEncoder(nn.Module):
    """Stack of Linear + activation (+ LayerNorm) + dropout layers."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        activation: Literal["relu", "gelu", "tanh"] = "relu",
        layer_norm: bool = False,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("MLPEncoder.hidden_sizes must list at least one layer size")
        layers: list[nn.Module] = []
        for size in hidden_sizes:
            layers.append(nn.Linear(in_features, size))
            if layer_norm:
                layers.append(nn.LayerNorm(size))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = size
        self.out_features = in_features
        self.net = nn.Sequential(*layers)
        load_init_checkpoint(self, init_checkpoint)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)


class TransformerEncoder(nn.Module):
    """Small pre-norm Transformer over sequences ``[B, T, F]`` or image patches.

    Images ``[B, C, H, W]`` are cut into ``patch_size`` squares (H, W divisible by it), each
    flattened to ``C * patch_size**2`` features, so ``in_features`` is that product for images.
    Positions get learned embeddings up to ``max_len``.
    """

    def __init__(
        self,
        in_features: int,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        max_len: int = 512,
        patch_size: int | None = None,
        pool: Literal["mean", "cls", "none"] = "mean",
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pool = pool
        self.out_features = d_model
        self.proj = nn.Linear(in_features, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward or 4 * d_model,
            dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        load_init_checkpoint(self, init_checkpoint)

    def _patches(self, images: Tensor) -> Tensor:
        if self.patch_size is None:
            raise ValueError("TransformerEncoder got images [B, C, H, W]: set patch_size")
        p = self.patch_size
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, inputs: Tensor) -> Tensor:
        x = self._patches(inputs) if inputs.dim() == 4 else inputs
        x = self.proj(x)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos[:, : x.shape[1]]
        x = self.norm(self.layers(x))
        if self.pool == "mean":
            return x.mean(dim=1)
        if self.pool == "cls":
            return x[:, 0]
        return x


class CNNEncoder(nn.Module):
    """Conv-BatchNorm-ReLU blocks, each halving the resolution after the first."""

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        kernel_size: int = 3,
        pool: Literal["avg", "none"] = "avg",
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i, out in enumerate(channels):
            blocks += [
                nn.Conv2d(
                    in_channels,
                    out,
                    kernel_size,
                    stride=1 if i == 0 else 2,
                    padding=kernel_size // 2,
                    bias=False,
                ),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            in_channels = out
        self.out_features = in_channels
        self.pool = pool
        self.net = nn.Sequential(*blocks)
        load_init_checkpoint(self, init_checkpoint)

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() == 3:  # [B, H, W] grey images
            inputs = inputs.unsqueeze(1)
        x = self.net(inputs)
        return x.mean(dim=(2, 3)) if self.pool == "avg" else x
