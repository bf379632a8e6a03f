"""What a run leaves behind besides checkpoints: validation history, summary.json,
confusion-matrix PNGs, per-task predictions and run_info.json."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from safetensors.torch import save

from compiler.files import atomic_write
from runtime.plots import fit_title
from runtime.protocols import RecordsConfusion
from runtime.tasks import RegressionTask, Task

_HASH_LINE = re.compile(r"^#\s*sha256\s+([0-9a-fA-F]{64})\s+(.+?)\s*$")
_PACKAGES = (
    "mtl-toolkit",
    "torch",
    "lightning",
    "jsonargparse",
    "torchmetrics",
    "numpy",
    "scikit-learn",
)


class ValidationHistory(Callback):
    """Records every validation pass (metrics and confusion matrices) so the report can show
    the metrics of whichever checkpoint was selected as best; saved in checkpoints so a
    resumed run keeps its history."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        recorded = pl_module.confusion_matrices if isinstance(pl_module, RecordsConfusion) else {}
        confusion = recorded.get("val", {})
        self.entries.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "metrics": metrics,
                "confusion": {t: cm.tolist() for t, cm in confusion.items()},
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.entries = list(state_dict.get("entries", []))

    def best(self, monitor: str, mode: str, score: float | None) -> dict[str, Any] | None:
        """The first validation pass whose ``monitor`` equals the checkpoint's best score."""
        if score is None:
            return None
        for entry in self.entries:
            value = entry["metrics"].get(monitor)
            if value is not None and math.isclose(value, score, rel_tol=1e-6, abs_tol=1e-9):
                return entry
        return None


def task_metrics(metrics: dict[str, float], stage: str, task: str) -> dict[str, float]:
    """``{metric: value}`` of one task from ``<stage>/<task>/<metric>`` keys."""
    prefix = f"{stage}/{task}/"
    return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}


def per_task_report(metrics: dict[str, float], stage: str, tasks: list[str]) -> dict[str, Any]:
    return {t: task_metrics(metrics, stage, t) for t in tasks}


def json_safe(data: Any) -> Any:
    """``data`` with NaN/inf floats as None (JSON has no NaN: ``NaN`` would make the file
    unreadable to strict parsers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    return data


def absent_metrics(task: Task) -> dict[str, None]:
    """A task's headline metrics marked absent (None, written as null), for a task that had
    no labelled sample to score: never reported as 0."""
    names = (task.primary_metric, *task.comparison_metrics)
    return dict.fromkeys(names)


def write_json(path: Path, data: Any) -> None:
    atomic_write(
        path, json.dumps(json_safe(data), indent=2, sort_keys=False, allow_nan=False) + "\n"
    )


def plot_confusion_matrix(
    matrix: list[list[int]], class_names: list[str], path: Path, title: str
) -> None:
    """Counts with row-normalised colours (true label on rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(matrix, dtype=torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(class_names)
    size = min(3.5 + 0.5 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), layout="constrained")
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90 if n > 8 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(fit_title(title, size, fontsize=10), fontsize=10)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def plot_task_weights(run_dir: Path) -> Path | None:
    """``task_weights.png``: each task's balancer weight (``train/weight/<task>`` in
    metrics.csv) over training steps; None when the run logged no weights."""
    from runtime.rundir import RunDir

    path = RunDir(run_dir).metrics
    if not path.is_file():
        return None
    series: dict[str, tuple[list[float], list[float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key and key.startswith("train/weight/") and value:
                    steps, values = series.setdefault(key.removeprefix("train/weight/"), ([], []))
                    steps.append(float(row["step"]))
                    values.append(float(value))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for task, (steps, values) in series.items():
        ax.plot(steps, values, label=task)
    ax.set_xlabel("step")
    ax.set_ylabel("task weight")
    ax.set_title("balancer weights (train/weight/<task>)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = run_dir / "task_weights.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


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
    from runtime.rundir import RunDir

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


def header_comments(config_path: Path) -> dict[str, Any]:
    """The leading ``#`` comment block of a run config, and the ``# sha256 <hex> <path>``
    input hashes the compiler writes there."""
    lines: list[str] = []
    for line in config_path.read_text().splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        lines.append(line)
    inputs = [
        {"sha256": m.group(1), "path": m.group(2)}
        for m in (_HASH_LINE.match(line) for line in lines)
        if m
    ]
    return {"header": lines, "inputs": inputs}


def git_commit(cwd: Path) -> dict[str, Any] | None:
    """HEAD of the git checkout around ``cwd`` and whether it has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_info(argv: list[str], subcommand: str, config_path: Path, seed: Any) -> dict[str, Any]:
    return {
        "command": [Path(sys.argv[0]).name, *argv],
        "subcommand": subcommand,
        "config": str(config_path),
        "seed": seed,
        "versions": package_versions(),
        "git": git_commit(Path.cwd()),
        **header_comments(config_path),
    }
