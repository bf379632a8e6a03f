"""Temporal convolutional network: dilated 1-D convolutions over frame features.

The standard model of frame-wise action segmentation (MS-TCN, Farha & Gall 2019): residual
blocks of dilated convolutions whose receptive field grows with the dilations, so each frame's
output sees ``receptive_field`` frames of context while the sequence keeps its length. Use it
as an encoder layer (shared by every task) or in a decoder before a per-position head.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class DilatedResidualBlock(nn.Module):
    """``x + dropout(conv1x1(relu(dilated_conv(x))))`` on ``[B, C, T]``, length kept."""

    def __init__(
        self, channels: int, dilation: int, kernel_size: int, dropout: float, causal: bool
    ) -> None:
        super().__init__()
        span = (kernel_size - 1) * dilation
        # causal: all padding on the left, so frame t sees frames <= t only
        self.padding = (span, 0) if causal else (span // 2, span - span // 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv(F.pad(x, self.padding)))
        return x + self.dropout(self.mix(h))


class TemporalConvNet(nn.Module):
    """``[B, T, F] -> [B, T, channels]``: a 1x1 input projection, then one residual dilated
    block per entry of ``dilations`` (e.g. ``[1, 2, 4, 8]``).

    Args:
        in_features: feature size of each frame (dim -1 of the input).
        channels: feature size of every block and of the output.
        dilations: one block per entry, each with that dilation (positive ints).
        kernel_size: taps per convolution (odd when not ``causal``, so frames stay centred).
        dropout: dropout on each block's residual branch.
        causal: only past frames (online use); else context on both sides.
    """

    def __init__(
        self,
        in_features: int,
        channels: int = 64,
        dilations: list[int] | None = None,
        kernel_size: int = 3,
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        dilations = [1, 2, 4, 8] if dilations is None else list(dilations)
        if not dilations or any(int(d) != d or d < 1 for d in dilations):
            raise ValueError(
                f"TemporalConvNet.dilations must be a non-empty list of positive integers, "
                f"got {dilations}"
            )
        if kernel_size < 2 or (not causal and kernel_size % 2 == 0):
            raise ValueError(
                f"TemporalConvNet.kernel_size must be >= 2 and odd unless causal "
                f"(an even kernel cannot centre on its frame), got {kernel_size}"
            )
        if in_features < 1 or channels < 1:
            raise ValueError(
                f"TemporalConvNet needs positive in_features and channels, got "
                f"{in_features} and {channels}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TemporalConvNet.dropout must lie in [0, 1), got {dropout}")
        self.dilations = [int(d) for d in dilations]
        self.kernel_size = kernel_size
        self.causal = causal
        self.out_features = channels
        self.proj = nn.Conv1d(in_features, channels, 1)
        self.blocks = nn.ModuleList(
            DilatedResidualBlock(channels, d, kernel_size, dropout, causal) for d in self.dilations
        )

    @property
    def receptive_field(self) -> int:
        """Frames one output frame depends on: ``1 + (kernel_size - 1) * sum(dilations)``."""
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() != 3:
            raise ValueError(
                f"TemporalConvNet expects frame features [B, T, F], got shape {tuple(inputs.shape)}"
            )
        x = self.proj(inputs.transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        return x.transpose(1, 2)
