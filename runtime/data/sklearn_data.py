"""scikit-learn's bundled toy datasets as per-dataset modules (nothing is downloaded)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from compiler.errors import did_you_mean
from runtime.data.base import TaskTensorDataset, TensorSplitModule, standardize_
from runtime.data.errors import DataConfigError
from runtime.data.splits import quantile_strata
from runtime.data.validate import Source

_LOADERS = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "diabetes": "load_diabetes",
}
REGRESSION_DATASETS = ("diabetes",)


def _digit_labels(y: np.ndarray) -> dict[str, np.ndarray]:
    return {"parity": y % 2, "ge5": (y >= 5).astype(np.int64)}


LABEL_SETS: dict[str, tuple[str, ...]] = {
    "digits": ("digit", "parity", "ge5"),
    "iris": ("class",),
    "wine": ("class",),
    "breast_cancer": ("class",),
    "diabetes": ("target",),
}
"""Label sets per dataset. "digit"/"class" are the original classes (remapped by ``subset``);
"parity" (even=0, odd=1) and "ge5" (digit >= 5) derive from the digit; "target" is regression."""


@cache
def _load_raw(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and original target of a bundled dataset (cached: several modules share one)."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, _LOADERS[dataset])()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.float32 if dataset in REGRESSION_DATASETS else np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


class SklearnDataModule(TensorSplitModule):
    """One of scikit-learn's bundled datasets, with selectable label sets as tasks.

    Args:
        dataset: "digits", "iris", "wine", "breast_cancer" or "diabetes".
        targets: task name -> label set (see ``LABEL_SETS``); several tasks may share the inputs.
        subset: keep only samples whose original class is listed, and renumber the "digit" /
            "class" labels to 0..len(subset)-1 in the listed order (e.g. digits [5,6,7,8,9]).
        val_fraction, test_fraction, seed: the split, stratified by the original class
            (by target quantiles for diabetes) and fixed by the seed.
        standardize: z-score the features (and regression targets) with training statistics,
            so tasks on different datasets see inputs and losses on a comparable scale.
        batch_size: fallback batch size (see :class:`DatasetModule`).
    """

    def __init__(
        self,
        dataset: str,
        targets: dict[str, str],
        subset: list[int] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        standardize: bool = True,
        batch_size: int = 32,
    ) -> None:
        super().__init__(val_fraction, test_fraction, seed, batch_size)
        if dataset not in _LOADERS:
            raise DataConfigError(
                f"unknown scikit-learn dataset '{dataset}'{did_you_mean(dataset, list(_LOADERS))}"
                f"; choose one of {', '.join(_LOADERS)}",
                key=("dataset",),
            )
        if not targets:
            raise DataConfigError("at least one task -> label set is needed", key=("targets",))
        for task, label_set in targets.items():
            if label_set not in LABEL_SETS[dataset]:
                raise DataConfigError(
                    f"dataset '{dataset}' has no label set '{label_set}'"
                    f"{did_you_mean(str(label_set), LABEL_SETS[dataset])}; "
                    f"choose one of {', '.join(LABEL_SETS[dataset])}",
                    key=("targets", task),
                )
        if subset is not None:
            if dataset in REGRESSION_DATASETS:
                raise DataConfigError(
                    f"'{dataset}' is a regression dataset; subset selects classes",
                    key=("subset",),
                )
            if len(set(subset)) != len(subset) or not subset:
                raise DataConfigError(
                    f"subset {subset} must list distinct classes", key=("subset",)
                )
        self.dataset = dataset
        self.targets = dict(targets)
        self.subset = list(subset) if subset is not None else None
        self.standardize = standardize

    @property
    def tasks(self) -> list[str]:
        return list(self.targets)

    def source(self) -> Source:
        return Source(name=f"scikit-learn dataset '{self.dataset}'", columns=self.targets)

    def _original(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = _load_raw(self.dataset)
        if self.subset is None:
            return x, y
        missing = sorted(set(self.subset) - set(np.unique(y).tolist()))
        if missing:
            raise DataConfigError(
                f"dataset '{self.dataset}' has no classes {missing}", key=("subset",)
            )
        keep = np.isin(y, self.subset)
        return x[keep], y[keep]

    def load(self) -> TaskTensorDataset:
        x, y = self._original()
        label_sets = {"target": y, "class": y, "digit": y}
        if self.subset is not None:
            remap = np.full(int(y.max()) + 1, -100, dtype=np.int64)
            remap[self.subset] = np.arange(len(self.subset))
            label_sets["class"] = label_sets["digit"] = remap[y]
        if self.dataset == "digits":
            label_sets.update(_digit_labels(y))
        targets = {
            task: torch.from_numpy(np.array(label_sets[label_set]))
            for task, label_set in self.targets.items()
        }
        self._strata = quantile_strata(y) if self.dataset in REGRESSION_DATASETS else y
        return TaskTensorDataset(torch.from_numpy(np.array(x)), targets)

    def strata(self, data: TaskTensorDataset) -> np.ndarray | None:
        return self._strata

    def fit_transform(self, train: TaskTensorDataset, others: list[TaskTensorDataset]) -> None:
        if not self.standardize:
            return
        standardize_(train.inputs, [o.inputs for o in others])
        for task, values in train.targets.items():
            if values.is_floating_point():
                standardize_(values, [o.targets[task] for o in others])
