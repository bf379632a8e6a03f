"""Self-supervised objectives: how inputs and targets are derived from a clean batch.

An objective takes a batch of a dataset's inputs and a seeded ``torch.Generator`` and returns
``(inputs, target)`` for one self-supervised task; :class:`runtime.data.ssl.SelfSupervisedModule`
applies it to any per-dataset module's inputs (its labels are ignored). Pair each with its task
and head (docs/examples/ssl.md):

=============================  ====================================  ==========================
objective                      target                                task / head
=============================  ====================================  ==========================
:class:`AugmentationChoice`    which of the k transforms, int ``[B]``  ``ClassificationTask``
:class:`MaskedReconstruction`  inputs at masked positions, NaN        ``MaskedReconstructionTask``
                               elsewhere, ``[B, ...]``               / ``RegressionHead``
:class:`ContrastiveViews`      pair ids ``[2B]`` of two views        ``ContrastiveTask`` /
                               (inputs ``[2B, ...]``)                ``ProjectionHead``
:class:`FeatureStatistics`     per-channel statistics ``[B, S*F]``   ``RegressionTask``
=============================  ====================================  ==========================
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Generator, Tensor

from runtime.augment import Augmentation


class Objective:
    """Base class: ``make(x, generator) -> (inputs, target)``, drawing only from
    ``generator`` so that the same batch and seed give the same views."""

    def make(self, x: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def _chain(augmentations: list[Augmentation], x: Tensor, generator: Generator) -> Tensor:
    for augmentation in augmentations:
        x = augmentation(x, generator)
    return x


class AugmentationChoice(Objective):
    """Each sample gets one of ``transforms`` at random; the target is its position in the list
    (augmentation classification; class names: the transforms' ``name``)."""

    def __init__(self, transforms: list[Augmentation]) -> None:
        if len(transforms) < 2:
            raise ValueError("augmentation classification needs at least 2 transforms")
        self.transforms = list(transforms)

    @property
    def class_names(self) -> list[str]:
        return [t.name for t in self.transforms]

    def make(self, x: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
        choice = torch.randint(0, len(self.transforms), (x.shape[0],), generator=generator)
        out = torch.empty_like(x)
        for k, transform in enumerate(self.transforms):
            # every transform draws for the whole batch: the stream does not depend on choice
            out = torch.where(_rows(choice == k, x), transform(x, generator), out)
        return out, choice


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view((like.shape[0],) + (1,) * (like.dim() - 1))


class MaskedReconstruction(Objective):
    """Hide a share ``mask_ratio`` of positions (replaced by ``mask_value``); the target is
    the input at hidden positions and NaN elsewhere, so the regression loss counts the hidden
    positions only.

    Positions are time steps of sequences ``[B, T, F]`` (all channels of a step hidden
    together, in runs of ``span`` steps), pixels of images ``[B, C, H, W]`` (all channels) and
    entries of vectors ``[B, F]``.
    """

    def __init__(self, mask_ratio: float = 0.25, span: int = 1, mask_value: float = 0.0) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if span < 1:
            raise ValueError(f"span must be >= 1, got {span}")
        self.mask_ratio = mask_ratio
        self.span = span
        self.mask_value = mask_value

    def mask(self, x: Tensor, generator: Generator) -> Tensor:
        """Boolean ``x``-shaped mask, True where hidden (at least one position per sample)."""
        b = x.shape[0]
        if x.dim() == 3:  # [B, T, F]: runs of time steps
            t = x.shape[1]
            blocks = -(-t // self.span)
            hidden = _at_least_one(
                _uniform_mask((b, blocks), self.mask_ratio, generator), generator
            )
            steps = hidden.repeat_interleave(self.span, dim=1)[:, :t]
            return steps.unsqueeze(-1).expand_as(x)
        if x.dim() == 4:  # [B, C, H, W]: pixels
            _, _c, h, w = x.shape
            pixels = _at_least_one(_uniform_mask((b, h * w), self.mask_ratio, generator), generator)
            return pixels.view(b, 1, h, w).expand_as(x)
        flat = _at_least_one(
            _uniform_mask((b, x[0].numel()), self.mask_ratio, generator), generator
        )
        return flat.view_as(x)

    def make(self, x: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
        hidden = self.mask(x, generator)
        inputs = torch.where(hidden, torch.full_like(x, self.mask_value), x)
        target = torch.where(hidden, x, torch.full_like(x, float("nan")))
        return inputs, target


def _uniform_mask(shape: tuple[int, int], ratio: float, generator: Generator) -> Tensor:
    return torch.rand(shape, generator=generator) < ratio


def _at_least_one(hidden: Tensor, generator: Generator) -> Tensor:
    """Rows with nothing hidden get one random position hidden (a loss is never empty)."""
    pick = torch.randint(0, hidden.shape[1], (hidden.shape[0],), generator=generator)
    forced = torch.zeros_like(hidden)
    forced[torch.arange(hidden.shape[0]), pick] = True
    return torch.where(hidden.any(dim=1, keepdim=True), hidden, forced)


class ContrastiveViews(Objective):
    """Two independently augmented views of every sample, stacked as ``[2B, ...]`` (all first
    views, then all second ones); the target ``[2B]`` gives each row its pair id, so row ``i``
    and row ``i + B`` are the positive pair (NT-Xent / InfoNCE: ``ContrastiveTask``)."""

    def __init__(self, augmentations: list[Augmentation]) -> None:
        if not augmentations:
            raise ValueError("contrastive views need at least one augmentation")
        self.augmentations = list(augmentations)

    def make(self, x: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
        first = _chain(self.augmentations, x, generator)
        second = _chain(self.augmentations, x, generator)
        pairs = torch.arange(x.shape[0])
        return torch.cat([first, second]), torch.cat([pairs, pairs])


Statistic = Literal["mean", "std", "min", "max", "abs_mean", "slope"]
STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "abs_mean", "slope")


class FeatureStatistics(Objective):
    """Regress simple statistics of the clean input: per channel, over time for sequences
    ``[B, T, F]`` and over pixels for images ``[B, C, H, W]``; over all entries of vectors.
    The target is ``[B, len(statistics) * channels]``, statistic-major (all channels' means,
    then all stds, ...). ``slope`` is the least-squares trend per time step (sequences).
    """

    def __init__(self, statistics: list[Statistic] | None = None) -> None:
        chosen = list(statistics) if statistics is not None else ["mean", "std", "min", "max"]
        unknown = [s for s in chosen if s not in STATISTICS]
        if unknown or not chosen:
            raise ValueError(f"statistics must be some of {', '.join(STATISTICS)}; got {chosen}")
        self.statistics = chosen

    def values(self, x: Tensor) -> Tensor:
        """The statistics of ``x``, ``[B, len(statistics) * channels]``."""
        if x.dim() == 3:
            series = x.transpose(1, 2)  # [B, F, T]
        elif x.dim() == 4:
            series = x.flatten(2)  # [B, C, H*W]
        else:
            series = x.reshape(x.shape[0], 1, -1)
        columns = []
        for stat in self.statistics:
            if stat == "mean":
                columns.append(series.mean(-1))
            elif stat == "std":
                columns.append(series.std(-1, unbiased=False))
            elif stat == "min":
                columns.append(series.amin(-1))
            elif stat == "max":
                columns.append(series.amax(-1))
            elif stat == "abs_mean":
                columns.append(series.abs().mean(-1))
            else:
                steps = torch.arange(series.shape[-1], dtype=series.dtype)
                centred = steps - steps.mean()
                denom = centred.square().sum().clamp(min=1e-12)
                columns.append((series * centred).sum(-1) / denom)
        return torch.cat(columns, dim=1)

    def make(self, x: Tensor, generator: Generator) -> tuple[Tensor, Tensor]:
        return x, self.values(x)
