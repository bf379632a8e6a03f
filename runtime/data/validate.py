"""Checks a per-dataset module runs on what it loaded, before any split or batch.

Every problem becomes a :class:`DataConfigError` naming the file (and CSV line), the column
and the first bad row: inputs that are NaN/inf, targets of the wrong dtype (a fractional
"class id"), class ids out of range for the task, multi-label entries that are not 0/1,
infinite regression targets, a file with no rows, a task without a single label in its
training split. Range checks need to know each task's targets (:class:`TargetSpec`); the
run's model tells them to the data module with :func:`expect_tasks` before ``setup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch

from runtime.data.errors import DataConfigError

MISSING_CLASS = -100


@dataclass(frozen=True)
class TargetSpec:
    """What one task accepts: class ids ``0..width-1``, ``width`` yes/no labels, or ``width``
    real values (missing: -100 for class ids and labels, NaN for values). ``per_position``:
    the values come per position, ``[N, T, width]`` (frame-wise regression)."""

    kind: Literal["class", "multilabel", "regression"]
    width: int
    per_position: bool = False

    @property
    def dtype(self) -> str:
        return "int64" if self.kind == "class" else "float32"


@runtime_checkable
class DeclaresTargets(Protocol):
    """A task that can say what targets it accepts (the built-in tasks do)."""

    def target_spec(self) -> TargetSpec | None: ...


@runtime_checkable
class ExpectsTargets(Protocol):
    """A data module that checks its targets against the tasks' specs when it loads."""

    def expect_targets(self, specs: Mapping[str, TargetSpec]) -> None: ...


def expect_tasks(datamodule: object, tasks: Mapping[str, object]) -> None:
    """Tell ``datamodule`` (when it can check) what each task of the model accepts; call it
    before ``setup``."""
    if not isinstance(datamodule, ExpectsTargets):
        return
    specs = {}
    for name, task in tasks.items():
        spec = task.target_spec() if isinstance(task, DeclaresTargets) else None
        if spec is not None:
            specs[name] = spec
    datamodule.expect_targets(specs)


@dataclass
class Source:
    """Where loaded rows came from, to name them in messages.

    Args:
        name: "file data.csv", "dataset 'digits'"...
        file: the file, when there is one (becomes the error's file).
        columns: task -> the column (or label set) holding its targets.
        inputs: the input column names, one per feature when each column is one feature.
        header_lines: lines before the first row (CSV: 1), so row r is on line r + 1 + this.
        dtypes: task -> "int64"/"float32" the user asked for (``target_dtypes``).
    """

    name: str
    file: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    inputs: list[str] | None = None
    header_lines: int | None = None
    dtypes: Mapping[str, str] = field(default_factory=dict)

    def error(self, message: str, row: int | None = None, key: tuple = ()) -> DataConfigError:
        line = None
        where = ""
        if row is not None:
            if self.header_lines is not None:
                line = row + 1 + self.header_lines
            where = f" (first bad row: {row}, counting from 0)"
        prefix = "" if self.file else f"{self.name}: "
        return DataConfigError(
            f"{prefix}{message}{where}", file=self.file, line=line, key=key or None
        )

    def column(self, task: str) -> str:
        return f"column '{self.columns.get(task, task)}' (task '{task}')"


def _first(mask: torch.Tensor) -> int | None:
    """First row where ``mask`` (``[N, ...]``) holds anywhere."""
    rows = mask.reshape(len(mask), -1).any(dim=1).nonzero()
    return int(rows[0]) if len(rows) else None


def _check_inputs(inputs: torch.Tensor, source: Source) -> None:
    if not inputs.is_floating_point():
        return
    bad = ~torch.isfinite(inputs)
    row = _first(bad)
    if row is None:
        return
    what = "the inputs"
    flat = bad[row].reshape(-1)
    feature = int(flat.nonzero()[0])
    if source.inputs and len(source.inputs) == flat.numel():
        what = f"input column '{source.inputs[feature]}'"
    elif source.inputs and len(source.inputs) == 1:
        what = f"input column '{source.inputs[0]}'"
    value = inputs[row].reshape(-1)[feature].item()
    raise source.error(
        f"{what} holds a non-finite value ({value}); NaN/inf inputs make the "
        "loss NaN: fill or drop those rows",
        row,
        ("inputs",),
    )


def _coerce(
    task: str, values: torch.Tensor, dtype: str, kind: str | None, source: Source
) -> torch.Tensor:
    """``values`` as ``dtype``, refusing lossy casts (a fractional class id)."""
    key = ("targets", task)
    if dtype == "int64":
        if values.is_floating_point():
            whole = torch.isnan(values) | (values == values.round())
            row = _first(~whole)
            if row is not None:
                value = values[row].reshape(-1)[0].item()
                raise source.error(
                    f"{source.column(task)} holds {value}, not a whole number: "
                    "class ids must be integers",
                    row,
                    key,
                )
            values = torch.where(
                torch.isnan(values), torch.full_like(values, MISSING_CLASS), values
            )
        return values.to(torch.int64)
    if not values.is_floating_point():
        values = values.to(torch.float32)
        if kind == "regression":  # -100 is the toolkit's "missing" for integer columns
            values = torch.where(values == MISSING_CLASS, torch.nan, values)
    values = values.to(torch.float32)
    if kind == "multilabel":
        values = torch.where(torch.isnan(values), torch.full_like(values, MISSING_CLASS), values)
    return values


def _check_range(task: str, values: torch.Tensor, spec: TargetSpec, source: Source) -> None:
    key = ("targets", task)
    column = source.column(task)
    if spec.kind == "class":
        bad = (values != MISSING_CLASS) & ((values < 0) | (values >= spec.width))
        row = _first(bad)
        if row is not None:
            value = values[row].reshape(-1)[bad[row].reshape(-1)][0].item()
            raise source.error(
                f"{column} holds class id {value}, out of range for a task "
                f"with {spec.width} classes (0..{spec.width - 1}; "
                f"{MISSING_CLASS} = missing)",
                row,
                key,
            )
        return
    if spec.per_position:
        shape_ok = (values.dim() == 3 and values.shape[2] == spec.width) or (
            values.dim() == 2 and spec.width == 1
        )
        wanted = f"[N, T, {spec.width}]"
    else:
        shape_ok = (values.dim() == 2 and values.shape[1] == spec.width) or (
            values.dim() == 1 and spec.width == 1
        )
        wanted = f"[N, {spec.width}]"
    if not shape_ok:
        raise source.error(
            f"{column} has shape {list(values.shape)} but the task takes "
            f"{spec.width} value(s) per {'frame' if spec.per_position else 'row'} ({wanted})",
            key=key,
        )
    if spec.kind == "multilabel":
        bad = (values != 0) & (values != 1) & (values != MISSING_CLASS)
        row = _first(bad)
        if row is not None:
            raise source.error(
                f"{column} holds {values[row].tolist()}: multi-label entries "
                f"must be 0 or 1 ({MISSING_CLASS} = missing)",
                row,
                key,
            )
    else:
        row = _first(torch.isinf(values))
        if row is not None:
            raise source.error(
                f"{column} holds an infinite value (NaN marks a missing value)", row, key
            )


def labelled(values: torch.Tensor) -> torch.Tensor:
    """Per row, whether it carries at least one label (-100 / NaN mark missing ones)."""
    missing = torch.isnan(values) if values.is_floating_point() else values == MISSING_CLASS
    return ~missing.reshape(len(values), -1).all(dim=1)


def validated(
    inputs: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    specs: Mapping[str, TargetSpec],
    source: Source,
) -> dict[str, torch.Tensor]:
    """The targets cast to what their tasks take, after every check above."""
    if len(inputs) == 0:
        raise source.error("has no rows")
    _check_inputs(inputs, source)
    checked = {}
    for task, values in targets.items():
        spec = specs.get(task)
        asked = source.dtypes.get(task)
        if spec is not None and asked is not None and asked != spec.dtype:
            raise source.error(
                f"target_dtypes.{task} is {asked} but task '{task}' takes "
                f"{spec.dtype} targets ({spec.kind})",
                key=("target_dtypes", task),
            )
        dtype = asked or (spec.dtype if spec else None)
        if dtype is None:
            dtype = "float32" if values.is_floating_point() else "int64"
        values = _coerce(task, values, dtype, spec.kind if spec else None, source)
        if spec is not None:
            _check_range(task, values, spec, source)
        checked[task] = values
    return checked


def require_labels(targets: Mapping[str, torch.Tensor], source: Source) -> None:
    """Refuse a task none of whose training rows carries a label: it cannot learn, and its
    metrics would read as zeros."""
    for task, values in targets.items():
        if not bool(labelled(values).any()):
            raise source.error(
                f"{source.column(task)}: none of the {len(values)} training "
                "rows has a label (all are missing): drop the task from this "
                "dataset or fill its labels",
                key=("targets", task),
            )
