"""Time to plan and iterate one training epoch of the multi-dataset sampler, per sample mode.

Ten datasets of very different sizes, 1M samples in total, batch size 32, one rank. The target
is under 2 s per epoch in every mode (sampling must stay O(1) per step). Run:

    python benchmarks/sampler_bench.py
"""

from __future__ import annotations

import time

from runtime.data.sampler import SAMPLE_MODES, MultiDatasetBatchSampler

SIZES = [400_000, 200_000, 120_000, 80_000, 60_000, 50_000, 40_000, 25_000, 15_000, 10_000]
BATCH_SIZE = 32


def time_epoch(mode: str, refill: bool) -> tuple[float, int, int]:
    """Seconds for one epoch (plan + every step's sample ids), steps, and samples yielded."""
    sampler = MultiDatasetBatchSampler(
        SIZES, [BATCH_SIZE] * len(SIZES), mode=mode, refill=refill, seed=0
    )
    start = time.perf_counter()
    steps = samples = 0
    for key in sampler:
        steps += 1
        samples += len(key.indices)
    return time.perf_counter() - start, steps, samples


def main() -> None:
    print(f"{len(SIZES)} datasets, {sum(SIZES):,} samples, batch size {BATCH_SIZE}, 1 rank")
    print(f"{'mode':<14}{'refill':<8}{'steps':>9}{'samples':>11}{'seconds':>9}")
    for mode in SAMPLE_MODES:
        for refill in (True, False):
            seconds, steps, samples = time_epoch(mode, refill)
            print(f"{mode:<14}{refill!s:<8}{steps:>9,}{samples:>11,}{seconds:>9.2f}")


if __name__ == "__main__":
    main()
