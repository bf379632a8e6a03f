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
from runtime.data.validate import Source

_DTYPES = {"int64": torch.int64, "float32": torch.float32}


def _csv_cell(text: str) -> float:
    return math.nan if text.strip() == "" else float(text)


def _is_int_literal(text: str) -> bool:
    text = text.strip()
    return text == "" or text.lstrip("+-").isdigit()


class TextColumn(str):
    """Where a CSV column stops being numeric: ``line N: 'text'`` (kept instead of a tensor,
    an error only if the column is used)."""


def _csv_rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataConfigError(
            f"not a UTF-8 text file (byte {raw[exc.start]:#04x} at offset "
            f"{exc.start}): is it really a CSV?",
            file=path,
            line=line,
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataConfigError("holds NUL bytes: a binary file, not a CSV", file=path, line=line)
    reader = csv.reader(text.splitlines())
    try:
        return list(reader)
    except csv.Error as exc:
        raise DataConfigError(
            f"not a readable CSV ({exc})", file=path, line=reader.line_num
        ) from None


def _read_csv(path: Path) -> dict[str, torch.Tensor | TextColumn]:
    """Numeric columns of a CSV with a header row; columns of integer literals become int64."""
    rows = _csv_rows(path)
    if not rows:
        raise DataConfigError("the CSV file is empty (a header row is needed)", file=path)
    header, body = [name.strip() for name in rows[0]], rows[1:]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataConfigError(
                f"row has {len(row)} cells but the header has {len(header)}",
                file=path,
                line=line,
            )
    columns: dict[str, torch.Tensor | TextColumn] = {}
    for col, name in enumerate(header):
        cells = [row[col] for row in body]
        values = []
        for line, cell in enumerate(cells, start=2):
            try:
                values.append(_csv_cell(cell))
            except ValueError:
                values = None
                columns[name] = TextColumn(f"line {line}: {cell.strip()[:40]!r}")
                break
        if values is None:
            continue
        array = np.array(values, dtype=np.float64)
        if all(_is_int_literal(cell) for cell in cells):
            columns[name] = torch.from_numpy(np.where(np.isnan(array), -100, array)).long()
        else:
            columns[name] = torch.from_numpy(array).float()
    return columns


def read_tensor_file(path: str | Path) -> dict[str, torch.Tensor | TextColumn]:
    """Named columns of a .pt (dict of tensors), .npz or .csv file, as tensors with N rows
    (a CSV column that is not numeric comes as the :class:`TextColumn` saying where)."""
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
    except Exception as exc:  # corrupt or foreign files fail in many ways
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
        column = columns[name]
        if isinstance(column, TextColumn):
            raise DataConfigError(
                f"column '{name}' is not numeric (first text cell at {column})", file=path, key=key
            )
        return column

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
            if len(parts[0]) == 0:
                raise DataConfigError("the file has no data rows", file=path)
            x = torch.cat([p.reshape(len(p), -1) for p in parts], dim=1)
        targets = {
            task: self._column(columns, name, path, ("targets", task))
            for task, name in self.targets.items()
        }
        try:
            return TaskTensorDataset(x, targets)
        except DataConfigError as exc:
            raise DataConfigError(exc.message, file=path) from None

    def load(self) -> TaskTensorDataset:
        return self.read(self.path)

    def source(self, path: str | None = None) -> Source:
        """The file ``path`` (default: ``path``) as a :class:`Source` for the checks."""
        path = path or self.path
        inputs = [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)
        return Source(
            name=f"file {path}",
            file=path,
            columns=self.targets,
            inputs=inputs,
            header_lines=1 if Path(path).suffix.lower() == ".csv" else None,
            dtypes=self.target_dtypes,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        super().setup(stage)
        if self.val_path:
            self.val_dataset = self.checked(self.read(self.val_path), self.source(self.val_path))
        if self.test_path:
            self.test_dataset = self.checked(self.read(self.test_path), self.source(self.test_path))
