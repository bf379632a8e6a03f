"""Ready-made encoders. An encoder module receives the previous module's output (the first
one receives ``batch["inputs"]``) and returns features for the next one.

Shapes: ``MLPEncoder`` ``[B, F] -> [B, H]`` (also ``[B, T, F] -> [B, T, H]``);
``TransformerEncoder`` ``[B, T, F]`` or images ``[B, C, H, W]`` (cut into patches) ->
``[B, D]`` pooled or ``[B, T, D]`` with ``pool: none``; ``CNNEncoder`` ``[B, C, H, W]`` ->
``[B, channels[-1]]`` pooled or ``[B, channels[-1], H', W']`` with ``pool: none``;
``SequenceTransformer`` ``[B, T, F]`` -> ``[B, D]`` pooled or ``[B, T / patch_len, D]``, with
plain named linear layers for LoRA and adapters.

Each takes ``init_checkpoint``: initial weights from a converted checkpoint (a DCP folder, a
``.safetensors`` file or a torch state dict; see :mod:`runtime.init_checkpoint`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from runtime.init_checkpoint import load_init_checkpoint

#: the non-linearities an ``activation`` option names (MLP layers, bottleneck adapters)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


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
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = size
        self.out_features = in_features
        self.net = nn.Sequential(*layers)
        load_init_checkpoint(self, init_checkpoint)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(inputs)


class _TokenPooling(nn.Module):
    """Learned positions (and a CLS token) for ``[B, N, D]`` tokens, and the pooling after."""

    def __init__(self, d_model: int, max_len: int, pool: Literal["mean", "cls", "none"]) -> None:
        super().__init__()
        self.pool = pool
        self.out_features = d_model
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, d_model))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pool == "cls" else None

    def add_positions(self, x: Tensor) -> Tensor:
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos[:, : x.shape[1]]

    def pooled(self, x: Tensor) -> Tensor:
        if self.pool == "mean":
            return x.mean(dim=1)
        if self.pool == "cls":
            return x[:, 0]
        return x


class TransformerEncoder(_TokenPooling):
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
        super().__init__(d_model, max_len, pool)
        self.patch_size = patch_size
        self.proj = nn.Linear(in_features, d_model)
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
        x = self.add_positions(self.proj(x))
        return self.pooled(self.norm(self.layers(x)))


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


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate ``q_proj``, ``k_proj``, ``v_proj`` and
    ``out_proj`` linear layers, so LoRA (peft) and adapters can target each of them by name."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model) for _ in range(4)
        )

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (
            proj(x).view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        drop = self.dropout if self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class SequenceBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + ff(norm2(x))``."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential()
        self.ff.add_module("linear1", nn.Linear(d_model, dim_feedforward))
        self.ff.add_module("act", nn.GELU())
        self.ff.add_module("dropout", nn.Dropout(dropout))
        self.ff.add_module("linear2", nn.Linear(dim_feedforward, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.dropout(self.ff(self.norm2(x)))


class SequenceTransformer(_TokenPooling):
    """Transformer over sequences ``[B, T, F]`` whose every linear layer has its own name.

    Unlike ``TransformerEncoder`` (PyTorch's fused layers), attention here is made of plain
    ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` linear layers and the feed-forward part
    of ``linear1`` / ``linear2``, so peft LoRA (``StaticLoRA``) trains on all of them with or
    without the base weights, and ``TaskAdapters`` can follow ``attn`` and ``ff``.
    ``patch_len`` groups that many consecutive time steps into one token (``[B, T / p, p * F]``;
    T must be divisible by it), which shortens long sequences; positions get learned embeddings
    up to ``max_len`` tokens. Output ``[B, d_model]`` pooled, or ``[B, T / p, d_model]`` with
    ``pool: none``.
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
        patch_len: int = 1,
        pool: Literal["mean", "cls", "none"] = "mean",
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__(d_model, max_len, pool)
        if patch_len < 1 or num_layers < 1:
            raise ValueError(
                f"SequenceTransformer needs patch_len >= 1 and num_layers >= 1, got "
                f"{patch_len}, {num_layers}"
            )
        self.patch_len, self.max_len = patch_len, max_len
        self.proj = nn.Linear(in_features * patch_len, d_model)
        self.blocks = nn.ModuleList(
            SequenceBlock(d_model, num_heads, dim_feedforward or 4 * d_model, dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        load_init_checkpoint(self, init_checkpoint)

    def forward(self, inputs: Tensor) -> Tensor:
        b, t, f = inputs.shape
        p = self.patch_len
        if t % p or t // p > self.max_len:
            raise ValueError(
                f"SequenceTransformer got {t} time steps: they must be divisible by patch_len "
                f"({p}) and give at most max_len ({self.max_len}) tokens"
            )
        x = self.add_positions(self.proj(inputs.reshape(b, t // p, p * f)))
        for block in self.blocks:
            x = block(x)
        return self.pooled(self.norm(x))
