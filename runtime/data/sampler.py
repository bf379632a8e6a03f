"""The batch plan of multi-dataset training: which dataset each step uses, and which samples.

Every step draws one batch from one dataset. Per epoch the sampler plans, in a few vectorised
numpy calls, the dataset of every step (the same on all ranks, as it depends only on seed and
epoch) and each step's *chunk*: the step's position in that dataset's sample stream. A chunk
is one global batch (``batch_size * world_size`` stream positions), cut into one slice per
rank, so ranks see disjoint samples. A dataset's stream is a seeded permutation of its samples
(refilled with fresh permutations when training wraps around), so looking up a step's samples
is O(batch size) with no list re-slicing, and resuming at any step needs only (epoch, step).

``all_datasets`` is the exception to one dataset per step: step s takes chunk s of *every*
dataset (a tuple of keys, one per dataset), so every task is in every step. An epoch is as many
steps as the largest dataset needs (smaller ones are refilled), or as the smallest one allows
without refill.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
from torch.utils.data import DistributedSampler

from runtime.data.errors import DataConfigError

SAMPLE_MODES = ("random_cycle", "round_robin", "proportional", "temperature", "all_datasets")
ALL_DATASETS = "all_datasets"
EVAL_MODE = "sequential"
"""Evaluation order: every batch of dataset 0, then of dataset 1, ... (not a training mode)."""

_PLAN_STREAM = 0  # seed-sequence tags keep the plan and the per-dataset permutations independent
_ORDER_STREAM = 1


class BatchKey(NamedTuple):
    """What the loader fetches for one step: dataset number and this rank's local sample ids."""

    dataset: int
    indices: np.ndarray


def batches_per_pass(size: int, batch_size: int, world_size: int, refill: bool) -> int:
    """Steps one dataset needs to cover its ``size`` samples once on ``world_size`` ranks.

    With refill every chunk is full (the stream wraps), so it is ceil(size / global batch).
    Without, the last chunk holds the remainder; a remainder too small to give every rank a
    sample (< world_size) is merged into the previous chunk instead.
    """
    if size <= 0:
        return 0
    global_batch = batch_size * world_size
    if refill:
        return math.ceil(size / global_batch)
    full, rest = divmod(size, global_batch)
    return full + (1 if rest and (rest >= world_size or full == 0) else 0)


class MultiDatasetBatchSampler(DistributedSampler):
    """Yields one :class:`BatchKey` per step; see the module docstring for the plan.

    It subclasses ``DistributedSampler`` because it already shards across ranks: Lightning then
    leaves it alone instead of wrapping the loader in a sampler of its own.

    Args:
        sizes: number of samples per dataset.
        batch_sizes: per-rank batch size per dataset.
        mode: one of ``SAMPLE_MODES`` (training) or ``"sequential"`` (evaluation).
        refill: upsample (training): smaller datasets cycle through fresh permutations.
        temperature: T of the "temperature" mode (dataset weight = size ** (1 / T)).
        limits: per-dataset cap on samples used per epoch (global, all ranks together);
            each epoch uses a fresh random subset of that many samples.
        shuffle: permute samples (training); without, datasets are read in index order.
        seed, rank, world_size: the plan depends on seed and epoch only; rank picks the slice.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_sizes: Sequence[int],
        mode: str = "random_cycle",
        refill: bool = True,
        temperature: float = 2.0,
        limits: Sequence[int | None] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(range(0), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        if mode not in (*SAMPLE_MODES, EVAL_MODE):
            raise DataConfigError(
                f"unknown sample_mode '{mode}'; choose one of {', '.join(SAMPLE_MODES)}",
                key=("sample_mode",),
            )
        if len(sizes) != len(batch_sizes):
            raise ValueError("sizes and batch_sizes differ in length")
        if mode == "temperature" and not temperature > 0:
            raise DataConfigError("temperature must be positive", key=("temperature",))
        limits = list(limits) if limits is not None else [None] * len(sizes)
        self.sizes = [
            int(n) if lim is None else min(int(n), int(lim))
            for n, lim in zip(sizes, limits, strict=True)
        ]
        self.full_sizes = [int(n) for n in sizes]
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.mode = mode
        self.refill = refill
        self.temperature = temperature
        self.world_size = world_size
        if refill and 0 in self.sizes:
            raise DataConfigError("cannot refill a dataset without samples", key=("refill",))
        self.batches = [
            batches_per_pass(n, b, world_size, refill)
            for n, b in zip(self.sizes, self.batch_sizes, strict=True)
        ]
        self._resume_step = 0
        self._steps_yielded = 0
        self._first_orders: dict[int, tuple[tuple[int, int], np.ndarray]] = {}
        self._wrap_orders: dict[int, tuple[tuple[int, int], np.ndarray]] = {}

    # ----------------------------------------------------------------- plan
    def __len__(self) -> int:
        if self.mode == ALL_DATASETS:
            return (max if self.refill else min)(self.batches, default=0)
        if self.mode in ("random_cycle", "round_robin") and self.refill:
            return len(self.sizes) * max(self.batches, default=0)
        return sum(self.batches)

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**63, *stream])

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset, chunk) of every step of ``epoch``: identical on every rank."""
        counts = np.asarray(self.batches, dtype=np.int64)
        num = len(counts)
        rng = self._rng(_PLAN_STREAM, epoch)
        if self.mode == EVAL_MODE or num == 0:
            datasets = np.repeat(np.arange(num), counts)
            return datasets, _running_count(datasets, num)
        if self.mode in ("random_cycle", "round_robin"):
            rounds = int(counts.max())
            active = np.arange(rounds)[:, None] < counts[None, :]
            if self.refill:
                active[:] = True
            if self.mode == "random_cycle":
                keys = rng.random((rounds, num))
            else:
                keys = np.tile(np.arange(num, dtype=np.float64), (rounds, 1))
            keys[~active] = np.inf
            order = np.argsort(keys, axis=1, kind="stable")
            datasets = order[np.take_along_axis(active, order, axis=1)]
            return datasets, np.repeat(np.arange(rounds), active.sum(axis=1))
        power = 1.0 if self.mode == "proportional" else 1.0 / self.temperature
        weights = np.asarray(self.sizes, dtype=np.float64) ** power
        steps = int(counts.sum())
        if self.refill:  # i.i.d. draws; a dataset that runs out is refilled
            datasets = rng.choice(num, size=steps, p=weights / weights.sum())
        else:
            # Each dataset emits its batches as a Poisson process of rate = its weight; merged
            # in time order, each step picks among datasets with batches left with p ~ weight.
            times = np.concatenate(
                [
                    np.cumsum(rng.exponential(1.0 / w, size=c))
                    for w, c in zip(weights, counts, strict=True)
                    if c
                ]
            )
            datasets = np.repeat(np.arange(num), counts)[np.argsort(times, kind="stable")]
        return datasets, _running_count(datasets, num)

    # --------------------------------------------------------- sample lookup
    def _order(self, epoch: int, dataset: int, wrap: int) -> np.ndarray:
        """Dataset-local sample ids in stream order for one pass (``wrap``) of an epoch."""
        cache = self._first_orders if wrap == 0 else self._wrap_orders
        cached = cache.get(dataset)
        if cached is not None and cached[0] == (epoch, wrap):
            return cached[1]
        size = self.sizes[dataset]
        rng = self._rng(_ORDER_STREAM, epoch, dataset, wrap)
        if not self.shuffle:
            order = np.arange(size)
        elif wrap == 0:  # the epoch's subset (all samples unless limited), shuffled
            order = rng.permutation(self.full_sizes[dataset])[:size]
        elif size == self.full_sizes[dataset]:
            order = rng.permutation(size)
        else:  # a refill pass reshuffles the same limited subset
            order = self._order(epoch, dataset, 0)[rng.permutation(size)]
        cache[dataset] = ((epoch, wrap), order)
        return order

    def _stream(self, epoch: int, dataset: int, lo: int, hi: int) -> np.ndarray:
        """Sample ids at stream positions [lo, hi) (wrapping past the end when refilling)."""
        size = self.sizes[dataset]
        first, offset = divmod(lo, size)
        last, end = divmod(hi - 1, size)
        if first == last:
            return self._order(epoch, dataset, first)[offset : end + 1]
        parts = [self._order(epoch, dataset, first)[offset:]]
        parts += [self._order(epoch, dataset, w) for w in range(first + 1, last)]
        parts.append(self._order(epoch, dataset, last)[: end + 1])
        return np.concatenate(parts)

    def indices(self, epoch: int, dataset: int, chunk: int) -> np.ndarray:
        """This rank's sample ids for one chunk: its slice of the global batch (never empty)."""
        size, width = self.sizes[dataset], self.batch_sizes[dataset] * self.world_size
        start = chunk * width
        length = width if self.refill or chunk < self.batches[dataset] - 1 else size - start
        if length < self.world_size:  # dataset smaller than the world: repeat, never empty
            lo = start + self.rank % length
            return self._stream(epoch, dataset, lo, lo + 1)
        lo = start + self.rank * length // self.world_size
        hi = start + (self.rank + 1) * length // self.world_size
        return self._stream(epoch, dataset, lo, hi)

    # ------------------------------------------------------------- iterate
    def __iter__(self) -> Iterator[BatchKey | tuple[BatchKey, ...]]:
        epoch, start = self.epoch, self._resume_step
        self._resume_step = 0
        if self.mode == ALL_DATASETS:
            for step in range(start, len(self)):
                self._steps_yielded = step + 1
                yield tuple(
                    BatchKey(d, self.indices(epoch, d, step)) for d in range(len(self.sizes))
                )
            return
        datasets, chunks = self.plan(epoch)
        for step in range(start, len(datasets)):
            self._steps_yielded = step + 1
            dataset = int(datasets[step])
            yield BatchKey(dataset, self.indices(epoch, dataset, int(chunks[step])))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to plan; a pending resume position only applies to its own epoch."""
        if epoch != self.epoch:
            self._resume_step = self._steps_yielded = 0
        self.epoch = epoch

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Position to resume at: ``{"epoch", "step"}`` of the next batch to deliver.

        ``consumed`` is how many of this epoch's batches were used; by default the number this
        sampler yielded, which runs ahead of training when loaders prefetch. A finished epoch
        is reported as step 0 of the next one.
        """
        step = self._steps_yielded if consumed is None else consumed
        if step >= len(self):
            return {"epoch": self.epoch + 1, "step": 0}
        return {"epoch": self.epoch, "step": step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration start at ``state``'s epoch and step."""
        self.epoch = int(state["epoch"])
        self._resume_step = int(state["step"])
        self._steps_yielded = self._resume_step


def _running_count(datasets: np.ndarray, num: int) -> np.ndarray:
    """For each step, how many earlier steps chose the same dataset (its chunk number)."""
    order = np.argsort(datasets, kind="stable")
    counts = np.bincount(datasets, minlength=num)
    chunks = np.empty(len(datasets), dtype=np.int64)
    chunks[order] = np.arange(len(datasets)) - np.repeat(np.cumsum(counts) - counts, counts)
    return chunks
