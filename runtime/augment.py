"""Seeded batch augmentations for self-supervised tasks (``runtime.data.ssl``).

Every augmentation transforms a whole batch and draws its randomness only from the
``torch.Generator`` it is given (one independent draw per sample), never from the global RNG:
the self-supervised data wrapper seeds that generator from the run's seed and the batch's
sample ids, so the same batch gets the same views in a resumed run, in a loader worker and on
any rank. Configure them by class path, e.g.
``{"class_path": "runtime.augment.TimeWarp", "init_args": {"strength": 0.2}}``.

Sequences are ``[B, T, F]`` (time, channels): :class:`Jitter`, :class:`Scaling`,
:class:`TimeWarp`, :class:`Permutation`, :class:`ChannelShuffle`. Images are ``[B, C, H, W]``
or grey ``[B, H, W]``: :class:`RandomCrop`, :class:`Flip`, :class:`Noise`. :class:`Identity`
leaves the batch as it is (the "no transform" class of augmentation classification).
"""

from __future__ import annotations

import torch
from torch import Generator, Tensor


class Augmentation:
    """Base class: ``augmentation(batch, generator)`` returns a new, transformed batch."""

    #: input ranks accepted (batch axis included), for a clear error on the wrong data
    ranks: tuple[int, ...] = ()
    what = ""

    def __call__(self, x: Tensor, generator: Generator) -> Tensor:
        if self.ranks and x.dim() not in self.ranks:
            raise ValueError(
                f"{type(self).__name__} works on {self.what}; got a batch of shape {tuple(x.shape)}"
            )
        return self.apply(x, generator)

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """Label of this transform (class names of augmentation classification)."""
        return type(self).__name__


def _normal(shape: tuple[int, ...], x: Tensor, generator: Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=x.dtype)


def _uniform(shape: tuple[int, ...], x: Tensor, generator: Generator) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=x.dtype)


def _permutations(rows: int, size: int, generator: Generator) -> Tensor:
    """``rows`` independent random permutations of ``range(size)``, ``[rows, size]``."""
    return torch.rand((rows, size), generator=generator).argsort(dim=1)


class Identity(Augmentation):
    """No change (a copy)."""

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        return x.clone()


class Noise(Augmentation):
    """Additive Gaussian noise of standard deviation ``sigma`` on every entry (any shape)."""

    def __init__(self, sigma: float = 0.1) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        return x + self.sigma * _normal(tuple(x.shape), x, generator)


class Jitter(Noise):
    """Sensor jitter: additive Gaussian noise on every time step and channel of ``[B, T, F]``."""

    ranks = (3,)
    what = "sequences [B, T, F]"


class Scaling(Augmentation):
    """Each sample's channels multiplied by ``1 + sigma * N(0, 1)`` (one factor per channel,
    constant over time): a sensor's gain differing from one recording to the next."""

    ranks = (3,)
    what = "sequences [B, T, F]"

    def __init__(self, sigma: float = 0.1) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        b, _, f = x.shape
        return x * (1 + self.sigma * _normal((b, 1, f), x, generator))


class TimeWarp(Augmentation):
    """A smooth random change of speed along time, resampled to the same length.

    The local speed is ``1 + strength * N(0, 1)`` at ``knots`` evenly spaced points
    (clamped to >= 0.1), linearly interpolated in between; its running sum, rescaled to
    ``[0, T - 1]``, gives where each output step reads the input (linear interpolation).
    """

    ranks = (3,)
    what = "sequences [B, T, F]"

    def __init__(self, strength: float = 0.2, knots: int = 4) -> None:
        if strength < 0 or knots < 1:
            raise ValueError(f"need strength >= 0 and knots >= 1, got {strength}, {knots}")
        self.strength = strength
        self.knots = knots

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        b, t, f = x.shape
        if t < 2:
            return x.clone()
        speed = (1 + self.strength * _normal((b, 1, self.knots + 1), x, generator)).clamp(min=0.1)
        speed = torch.nn.functional.interpolate(speed, size=t, mode="linear", align_corners=True)
        position = torch.cumsum(speed[:, 0], dim=1)
        position = position - position[:, :1]
        position = position / position[:, -1:].clamp(min=1e-12) * (t - 1)
        low = position.floor().long().clamp(0, t - 2)
        frac = (position - low.to(x.dtype)).unsqueeze(-1)
        below = x.gather(1, low.unsqueeze(-1).expand(b, t, f))
        above = x.gather(1, (low + 1).unsqueeze(-1).expand(b, t, f))
        return below + frac * (above - below)


class Permutation(Augmentation):
    """Time cut into ``segments`` equal parts (the last takes the remainder), shuffled."""

    ranks = (3,)
    what = "sequences [B, T, F]"

    def __init__(self, segments: int = 4) -> None:
        if segments < 1:
            raise ValueError(f"segments must be >= 1, got {segments}")
        self.segments = segments

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        b, t, f = x.shape
        parts = min(self.segments, t)
        bounds = torch.tensor([i * (t // parts) for i in range(parts)] + [t])
        starts, lengths = bounds[:-1], bounds.diff()
        order = _permutations(b, parts, generator)
        taken = lengths[order]  # [b, parts]: the pieces' lengths in their new order
        # output step j inside the k-th placed piece reads step j + starts[piece] - its new start
        shift = starts[order] - (taken.cumsum(dim=1) - taken)
        index = shift.flatten().repeat_interleave(taken.flatten()).view(b, t) + torch.arange(t)
        return x.gather(1, index.unsqueeze(-1).expand(b, t, f))


class ChannelShuffle(Augmentation):
    """The channels of each sample in a random order (sensors placed differently)."""

    ranks = (3,)
    what = "sequences [B, T, F]"

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        b, t, f = x.shape
        order = _permutations(b, f, generator)
        return x.gather(2, order.unsqueeze(1).expand(b, t, f))


def _as_channels(x: Tensor) -> tuple[Tensor, bool]:
    """Images as ``[B, C, H, W]`` (grey ``[B, H, W]`` get a channel axis) and whether one
    was added."""
    return (x.unsqueeze(1), True) if x.dim() == 3 else (x, False)


class RandomCrop(Augmentation):
    """Zero-pad by ``padding`` pixels on every side, then crop the original size at a random
    offset: a shift of up to ``padding`` pixels (the small-image crop)."""

    ranks = (3, 4)
    what = "images [B, C, H, W] or [B, H, W]"

    def __init__(self, padding: int = 1) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        images, added = _as_channels(x)
        b, c, h, w = images.shape
        p = self.padding
        padded = torch.nn.functional.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(b, c, h, w + 2 * p)
        picked = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(b, c, h, w)
        out = picked.gather(3, cols)
        return out.squeeze(1) if added else out


class Flip(Augmentation):
    """Mirror each image with probability ``p``: left-right (``horizontal``) and/or
    top-bottom (``vertical``), drawn independently."""

    ranks = (3, 4)
    what = "images [B, C, H, W] or [B, H, W]"

    def __init__(self, horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.horizontal = horizontal
        self.vertical = vertical
        self.p = p

    def apply(self, x: Tensor, generator: Generator) -> Tensor:
        out = x.clone()
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        for enabled, dim in ((self.horizontal, -1), (self.vertical, -2)):
            draw = _uniform((x.shape[0],), x, generator) < self.p
            if enabled:
                out = torch.where(draw.view(shape), out.flip(dim), out)
        return out
