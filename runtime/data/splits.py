"""Deterministic train/val/test splits, stratified by a label when one is given."""

from __future__ import annotations

import numpy as np

from runtime.data.errors import DataConfigError


def split_indices(
    num_samples: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, test) index arrays.

    Each stratum (e.g. each class) is shuffled with ``seed`` and cut by the fractions, so every
    split keeps the class balance of the whole and the same seed always gives the same split.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0):
        raise DataConfigError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must lie in [0, 1)"
        )
    if val_fraction + test_fraction >= 1.0:
        raise DataConfigError(
            f"val_fraction + test_fraction ({val_fraction} + {test_fraction}) must be below 1, "
            "or no training samples are left"
        )
    rng = np.random.default_rng(seed)
    if strata is None:
        groups = [np.arange(num_samples)]
    else:
        groups = [np.flatnonzero(strata == value) for value in np.unique(strata)]
    train, val, test = [], [], []
    for group in groups:
        group = rng.permutation(group)
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * val_fraction)
        test.append(group[:n_test])
        val.append(group[n_test : n_test + n_val])
        train.append(group[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in (train, val, test))


def quantile_strata(values: np.ndarray, bins: int = 5) -> np.ndarray:
    """Bin a regression target by quantiles so its splits cover the whole range."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values)
