"""The toolkit's matplotlib figures of a run (confusion matrices, balancer weights) and the
helpers they share; kept free of torch imports. Written atomically, like every file."""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from compiler.files import atomic_write


def fit_title(title: str, width_inches: float, fontsize: float = 9) -> str:
    """``title`` wrapped into lines that fit a figure ``width_inches`` wide, so it is never
    clipped at the figure's edge."""
    chars = max(12, int(width_inches * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False)) or title


def plot_confusion_matrix(
    matrix: list[list[int]], class_names: list[str], path: Path, title: str
) -> None:
    """Counts with row-normalised colours (true label on rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix, dtype=np.float64)
    rates = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    n = len(class_names)
    size = min(3.5 + 0.5 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), layout="constrained")
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
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
    _save(fig, path)


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
    _save(fig, out)
    return out


def _save(fig: Any, path: Path) -> None:
    """A PNG of ``fig`` through the one atomic writer, then the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
