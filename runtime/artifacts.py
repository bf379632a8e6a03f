"""What a run leaves behind besides checkpoints and provenance: the per-task metric reports
(``summary.json``, ``<stage>_metrics.json``), confusion-matrix PNGs and per-task predictions.
Every file goes through the one atomic writer."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from compiler.files import atomic_write, write_json
from runtime.plots import plot_confusion_matrix
from runtime.rundir import RunDir
from runtime.tasks import RegressionTask, Task


def task_metrics(metrics: dict[str, float], stage: str, task: str) -> dict[str, float]:
    """``{metric: value}`` of one task from ``<stage>/<task>/<metric>`` keys."""
    prefix = f"{stage}/{task}/"
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def per_task_report(metrics: dict[str, float], stage: str, tasks: list[str]) -> dict[str, Any]:
    return {t: task_metrics(metrics, stage, t) for t in tasks}


def absent_metrics(task: Task) -> dict[str, None]:
    """A task's headline metrics marked absent (None, written as null), for a task that had
    no labelled sample to score: never reported as 0."""
    names = (task.primary_metric, *task.comparison_metrics)
    return dict.fromkeys(names)


def write_summary(path: Path, figures: dict[str, dict[str, Any]], tasks: dict[str, Task]) -> None:
    """``summary.json``: each task's figures with its metric record (primary metric,
    comparison metrics, directions; ``runtime.metric_record``), which ``mtl-compare`` reads
    instead of the task classes."""
    write_json(path, {t: {**m, **tasks[t].metric_record().to_json()} for t, m in figures.items()})


def write_confusion_matrices(
    run_dir: Path,
    confusion: dict[str, list[list[int]]],
    tasks: dict[str, Task],
    prefix: str,
    title: str,
) -> list[Path]:
    paths = []
    for name, matrix in confusion.items():
        path = run_dir / f"{prefix}{name}.png"
        plot_confusion_matrix(matrix, tasks[name].class_names, path, f"{name} ({title})")
        paths.append(path)
    return paths


def write_predictions(run_dir: Path, batches: list[Any], tasks: dict[str, Task]) -> list[Path]:
    """Concatenate ``predict_step`` outputs per task into ``predictions/<task>.safetensors``
    (all outputs, plus ``index`` and ``target`` when the batches carry them) and
    ``predictions/<task>.csv`` (one row per sample: dataset, index, true label when known,
    then the outputs; vector tasks only)."""
    flat = [b for group in batches for b in (group if isinstance(group, list) else [group])]
    collected: dict[str, dict[str, list[torch.Tensor]]] = {}
    datasets: dict[str, list[str]] = {}
    for batch in flat:
        index, targets = batch.get("index"), batch.get("targets") or {}
        for task, outputs in batch["outputs"].items():
            columns = collected.setdefault(task, {})
            size = len(next(iter(outputs.values())))
            datasets.setdefault(task, []).extend([str(batch.get("dataset") or "")] * size)
            if index is not None:
                columns.setdefault("index", []).append(index.detach().cpu())
            if task in targets:
                columns.setdefault("target", []).append(targets[task].detach().cpu())
            for key, value in outputs.items():
                columns.setdefault(key, []).append(value.detach().cpu())
    out_dir = RunDir(run_dir).predictions
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, outputs in collected.items():
        rows = len(datasets[task])
        # index/target only when every batch had them (a column must cover every row)
        tensors = {
            k: torch.cat(v).contiguous()
            for k, v in outputs.items()
            if sum(len(t) for t in v) == rows
        }
        path = out_dir / f"{task}.safetensors"
        atomic_write(path, save(tensors))
        paths.append(path)
        if all(t.dim() <= 2 for t in tensors.values()):
            paths.append(_write_csv(out_dir / f"{task}.csv", datasets[task], tensors, tasks[task]))
    return paths


def _write_csv(
    path: Path, datasets: list[str], tensors: dict[str, torch.Tensor], task: Task
) -> Path:
    names = getattr(task, "class_names", None) or getattr(task, "label_names", None)
    columns: list[str] = ["dataset"]
    values: list[torch.Tensor] = []
    for key, tensor in tensors.items():
        if tensor.dim() == 1:
            columns.append(key)
            values.append(tensor.unsqueeze(1))
        else:
            width = tensor.shape[1]
            labels = names if names and len(names) == width else [str(i) for i in range(width)]
            columns += [f"{key}_{label}" for label in labels]
            values.append(tensor)
    table = torch.cat([v.double() for v in values], dim=1).tolist()
    target_columns = {i for i, c in enumerate(columns[1:]) if c.split("_")[0] == "target"}
    missing = None if isinstance(task, RegressionTask) else -100  # regression: NaN
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(columns)
    for dataset, row in zip(datasets, table, strict=True):
        writer.writerow(
            [
                dataset,
                *(_cell(x, missing if i in target_columns else None) for i, x in enumerate(row)),
            ]
        )
    atomic_write(path, handle.getvalue())
    return path


def _cell(value: float, missing: int | None) -> int | float | str:
    """A CSV cell; NaN and a missing true label (``missing``) are left empty."""
    if math.isnan(value) or value == missing:
        return ""
    return int(value) if float(value).is_integer() else round(value, 6)
