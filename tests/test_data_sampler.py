"""The multi-dataset batch sampler: epoch lengths, dataset choice, sharding, limits, resuming."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from runtime.data import SAMPLE_MODES, DataConfigError, MultiDatasetBatchSampler

SIZES, BATCH = [10, 25, 7], [4, 4, 2]
# batches to cover each dataset once on one rank: ceil(10/4), ceil(25/4), ceil(7/2)
PASS = [3, 7, 4]
# modes giving each step one dataset's batch (all_datasets: tests/test_balancing_runs.py)
PER_DATASET = [m for m in SAMPLE_MODES if m != "all_datasets"]


def make(mode: str = "random_cycle", refill: bool = True, **kwargs) -> MultiDatasetBatchSampler:
    kwargs.setdefault("sizes", SIZES)
    kwargs.setdefault("batch_sizes", BATCH)
    return MultiDatasetBatchSampler(mode=mode, refill=refill, **kwargs)


def keys(sampler: MultiDatasetBatchSampler, epoch: int = 0) -> list[tuple[int, list[int]]]:
    sampler.set_epoch(epoch)
    return [(key.dataset, key.indices.tolist()) for key in sampler]


@pytest.mark.parametrize(
    ("mode", "refill", "length"),
    [
        ("random_cycle", True, 3 * max(PASS)),
        ("round_robin", True, 3 * max(PASS)),
        ("proportional", True, sum(PASS)),
        ("temperature", True, sum(PASS)),
        *[(mode, False, sum(PASS)) for mode in PER_DATASET],
        ("all_datasets", True, max(PASS)),
        ("all_datasets", False, min(PASS)),
    ],
)
def test_epoch_length(mode: str, refill: bool, length: int) -> None:
    sampler = make(mode, refill)
    assert len(sampler) == length
    assert len(list(sampler)) == length


def test_random_cycle_visits_every_dataset_once_per_round() -> None:
    datasets = [d for d, _ in keys(make("random_cycle"))]
    rounds = [sorted(datasets[i : i + 3]) for i in range(0, len(datasets), 3)]
    assert rounds == [[0, 1, 2]] * max(PASS)
    assert len({tuple(datasets[i : i + 3]) for i in range(0, len(datasets), 3)}) > 1  # shuffled


def test_round_robin_order_without_refill_drops_exhausted_datasets() -> None:
    datasets = [d for d, _ in keys(make("round_robin", refill=False))]
    assert datasets == [0, 1, 2] * 3 + [1, 2] + [1] * 3


@pytest.mark.parametrize(
    ("mode", "expected_share"), [("proportional", 0.8), ("temperature", 2 / 3)]
)
def test_weighted_modes_draw_datasets_by_weight(mode: str, expected_share: float) -> None:
    # sizes 1000 and 4000: proportional p = 0.8; temperature T=2: sqrt weights -> p = 2/3
    sampler = make(mode, sizes=[1000, 4000], batch_sizes=[1, 1], temperature=2.0)
    share = np.mean([d == 1 for d, _ in keys(sampler)])
    assert abs(share - expected_share) < 0.03


def test_temperature_without_refill_serves_small_datasets_early() -> None:
    def last_small_step(mode: str, temperature: float) -> int:
        sampler = make(mode, False, sizes=[100, 1000], batch_sizes=[1, 1], temperature=temperature)
        datasets = [d for d, _ in keys(sampler)]
        assert Counter(datasets) == {0: 100, 1: 1000}
        return max(i for i, d in enumerate(datasets) if d == 0)

    assert last_small_step("proportional", 1.0) > 900  # spread evenly over the epoch
    assert last_small_step("temperature", 100.0) < 400  # near-uniform weights: used up early


@pytest.mark.parametrize("mode", PER_DATASET)
def test_plan_is_deterministic_in_seed_and_epoch(mode: str) -> None:
    assert keys(make(mode, seed=3)) == keys(make(mode, seed=3))
    assert keys(make(mode, seed=3)) != keys(make(mode, seed=4))
    assert keys(make(mode, seed=3), epoch=0) != keys(make(mode, seed=3), epoch=1)


@pytest.mark.parametrize("refill", [True, False])
@pytest.mark.parametrize("mode", PER_DATASET)
def test_simulated_ranks_share_the_plan_and_split_samples(mode: str, refill: bool) -> None:
    world = 3
    # With refill a step that wraps around a dataset may repeat a sample; sizes that are
    # multiples of the global batch never wrap mid-step, so disjointness is exact there too.
    sizes = [24, 36, 12] if refill else SIZES
    per_rank = [keys(make(mode, refill, sizes=sizes, rank=r, world_size=world))
                for r in range(world)]  # fmt: skip
    assert len({len(k) for k in per_rank}) == 1
    seen = [[] for _ in sizes]
    for step in zip(*per_rank, strict=True):
        assert len({dataset for dataset, _ in step}) == 1  # same dataset on every rank
        ids = [i for _, indices in step for i in indices]
        assert all(indices for _, indices in step)  # no empty batch
        assert len(ids) == len(set(ids))  # disjoint across ranks
        assert all(len(indices) <= BATCH[step[0][0]] + 1 for _, indices in step)
        seen[step[0][0]] += ids
    if not refill:  # every sample exactly once per epoch across ranks
        assert [sorted(s) for s in seen] == [list(range(n)) for n in SIZES]


def test_dataset_smaller_than_world_size_gives_no_rank_an_empty_batch() -> None:
    batches = [keys(make("round_robin", False, sizes=[2], batch_sizes=[4], rank=r, world_size=3))
               for r in range(3)]  # fmt: skip
    assert all(len(b) == 1 and len(b[0][1]) == 1 for b in batches)


def test_refill_upsamples_smaller_datasets_to_the_largest() -> None:
    counts = Counter(d for d, _ in keys(make("random_cycle", refill=True)))
    assert counts == {0: 7, 1: 7, 2: 7}
    seen = [i for d, ids in keys(make("random_cycle", refill=True)) if d == 0 for i in ids]
    assert len(seen) == 28
    assert set(seen) == set(range(10))


def test_sample_limit_is_global_across_ranks_and_fresh_each_epoch() -> None:
    def epoch_ids(epoch: int) -> list[int]:
        ids = []
        for rank in range(2):
            sampler = make("random_cycle", False, sizes=[100, 40], batch_sizes=[4, 4],
                           limits=[20, None], rank=rank, world_size=2)  # fmt: skip
            ids += [i for d, idx in keys(sampler, epoch) if d == 0 for i in idx]
        return ids

    first, second = epoch_ids(0), epoch_ids(1)
    assert len(first) == len(set(first)) == 20
    assert len(second) == 20
    assert set(first) != set(second)


def test_sample_limit_with_refill_cycles_within_the_subset() -> None:
    sampler = make("round_robin", True, sizes=[100, 40], batch_sizes=[4, 4], limits=[8, None])
    ids = [i for d, idx in keys(sampler) if d == 0 for i in idx]
    assert len(ids) == 40
    assert len(set(ids)) == 8


@pytest.mark.parametrize("mode", PER_DATASET)
def test_state_dict_resumes_at_the_exact_next_batch(mode: str) -> None:
    reference = make(mode, world_size=2, rank=1)
    reference.set_epoch(1)
    iterator = iter(reference)
    taken = [next(iterator) for _ in range(5)]
    state = reference.state_dict()
    assert state == {"epoch": 1, "step": 5}
    rest = [(k.dataset, k.indices.tolist()) for k in iterator]

    resumed = make(mode, world_size=2, rank=1)
    resumed.load_state_dict(state)
    assert [(k.dataset, k.indices.tolist()) for k in resumed] == rest
    assert len(taken) + len(rest) == len(reference)
    assert resumed.state_dict() == {"epoch": 2, "step": 0}  # a finished epoch rolls over
    assert len(keys(resumed, epoch=2)) == len(reference)  # and the next epoch is complete


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(DataConfigError, match="sample_mode"):
        make("zigzag")
    with pytest.raises(DataConfigError, match="temperature"):
        make("temperature", temperature=0.0)
    with pytest.raises(DataConfigError, match="refill"):
        make(sizes=[0, 5], batch_sizes=[1, 1])
