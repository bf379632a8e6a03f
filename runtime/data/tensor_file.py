"""Datasets stored as named columns in .pt, .npz or .csv files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from compiler.errors import did_you_mean
from runtime.data.base import TaskTensorDataset, TensorSplitModule
from runtime.data.errors import DataConfigError

_DTYPES = {"int64": torch.int64, "float32": torch.float32}


def _csv_cell(text: str) -> float:
    return math.nan if text.strip() == "" else float(text)


def _is_int_literal(text: str) -> bool:
    text = text.strip()
    return text == "" or text.lstrip("+-").isdigit()


def _read_csv(path: Path) -> dict[str, torch.Tensor | None]:
    """Numeric columns of a CSV with a header row; columns of integer literals become int64."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DataConfigError("the CSV file is empty (a header row is needed)", file=path)
    header, body = [name.strip() for name in rows[0]], rows[1:]
    columns: dict[str, torch.Tensor | None] = {}
    for col, name in enumerate(header):
        cells = []
        for line, row in enumerate(body, start=2):
            if len(row) != len(header):
                raise DataConfigError(
                    f"row has {len(row)} cells but the header has {len(header)}",
                    file=path,
                    line=line,
                )
            cells.append(row[col])
        try:
            values = np.array([_csv_cell(cell) for cell in cells], dtype=np.float64)
        except ValueError:
            columns[name] = None  # non-numeric: an error only if the column is used
            continue
        if all(_is_int_literal(cell) for cell in cells):
            columns[name] = torch.from_numpy(np.where(np.isnan(values), -100, values)).long()
        else:
            columns[name] = torch.from_numpy(values).float()
    return columns


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Named columns of a .pt (dict of tensors), .npz or .csv file, as tensors with N rows."""
    path = Path(path)
    if not path.is_file():
        raise DataConfigError("tensor file not found", file=path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict) or not all(
                isinstance(v, torch.Tensor) for v in loaded.values()
            ):
                raise DataConfigError(
                    "a .pt data file must hold a dict of column name -> tensor", file=path
                )
            return dict(loaded)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: torch.from_numpy(arrays[name]) for name in arrays.files}
        if suffix == ".csv":
            return _read_csv(path)
    except DataConfigError:
        raise
    except Exception as exc:  # corrupt or foreign files fail in many library-specific ways
        raise DataConfigError(f"cannot read the file: {exc}", file=path) from None
    raise DataConfigError(f"unsupported file type '{suffix}'; use .pt, .npz or .csv", file=path)


class TensorFileDataModule(TensorSplitModule):
    """A dataset from one file of named columns (plus optional separate val/test files).

    Args:
        path: .pt (``torch.save`` of a dict of tensors, loaded with ``weights_only=True``),
            .npz, or .csv with a header row.
        inputs: a list of columns stacked as features into float32 [N, F], or one column name
            used as is (any shape [N, ...], e.g. sequences or images) as float32.
        targets: task name -> column. Integer columns become int64 class ids (CSV: columns of
            integer literals; empty cells become -100), others float32 (empty cells NaN).
        target_dtypes: task -> "int64" or "float32" to override that inference.
        val_path, test_path: files with the same columns to use as those splits; a split
            without a file is carved from ``path`` by its fraction (stratified, seeded).
    """

    def __init__(
        self,
        path: str,
        inputs: list[str] | str,
        targets: dict[str, str],
        target_dtypes: dict[str, str] | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        super().__init__(
            0.0 if val_path else val_fraction, 0.0 if test_path else test_fraction, seed, batch_size
        )
        for task, dtype in (target_dtypes or {}).items():
            if task not in targets or dtype not in _DTYPES:
                raise DataConfigError(
                    f"target_dtypes.{task}: expected a task of `targets` mapped to one of "
                    f"{', '.join(_DTYPES)}, got {dtype!r}",
                    key=("target_dtypes", task),
                )
        self.path = path
        self.inputs = inputs
        self.targets = dict(targets)
        self.target_dtypes = dict(target_dtypes or {})
        self.val_path = val_path
        self.test_path = test_path

    @property
    def tasks(self) -> list[str]:
        return list(self.targets)

    def _column(self, columns: dict, name: str, path: str, key: tuple) -> torch.Tensor:
        if name not in columns:
            raise DataConfigError(
                f"column '{name}' not found{did_you_mean(name, list(columns))}; "
                f"the file has columns: {', '.join(columns) or '(none)'}",
                file=path,
                key=key,
            )
        if columns[name] is None:
            raise DataConfigError(f"column '{name}' is not numeric", file=path, key=key)
        return columns[name]

    def read(self, path: str) -> TaskTensorDataset:
        """Inputs and targets from one file."""
        columns = read_tensor_file(path)
        if isinstance(self.inputs, str):
            x = self._column(columns, self.inputs, path, ("inputs",)).float()
        else:
            parts = [
                self._column(columns, name, path, ("inputs", i)).float()
                for i, name in enumerate(self.inputs)
            ]
            if len({len(p) for p in parts}) > 1:
                raise DataConfigError("input columns differ in length", file=path, key=("inputs",))
            x = torch.cat([p.reshape(len(p), -1) for p in parts], dim=1)
        targets = {}
        for task, name in self.targets.items():
            y = self._column(columns, name, path, ("targets", task))
            dtype = self.target_dtypes.get(task)
            if dtype is None:
                dtype = "float32" if y.is_floating_point() else "int64"
            targets[task] = y.to(_DTYPES[dtype])
        try:
            return TaskTensorDataset(x, targets)
        except DataConfigError as exc:
            raise DataConfigError(exc.message, file=path) from None

    def load(self) -> TaskTensorDataset:
        return self.read(self.path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        super().setup(stage)
        if self.val_path:
            self.val_dataset = self.read(self.val_path)
        if self.test_path:
            self.test_dataset = self.read(self.test_path)
