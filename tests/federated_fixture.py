"""Tiny run configs for the mtl-federate tests: a 4-unit MLP on synthetic samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from file_run import head, mlp_encoder, run_config


def _synthetic(task: str, classes: int, num_samples: int) -> dict[str, Any]:
    return {
        "class_path": "runtime.data.SyntheticDataModule",
        "init_args": {
            "num_samples": num_samples,
            "input_shape": [6],
            "tasks": {task: {"kind": "classification", "num_classes": classes}},
        },
    }


def _write(folder: Path, name: str, tasks: dict[str, int], data: dict[str, Any]) -> Path:
    """A run config over ``data`` with a classification head and task per ``{task: classes}``."""
    config = run_config(
        mlp_encoder(6, 4),
        {t: head("ClassificationHead", 4, n) for t, n in tasks.items()},
        {
            t: {"class_path": "runtime.tasks.ClassificationTask", "init_args": {"num_classes": n}}
            for t, n in tasks.items()
        },
        {"num_workers": 0, **data},
        optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        trainer={"log_every_n_steps": 1},
    )
    path = folder / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_run_config(folder: Path, num_samples: int = 80) -> Path:
    """One dataset ``synth`` with one task ``kind`` (3 classes); the config's path."""
    data = {
        "data_modules": {"synth": _synthetic("kind", 3, num_samples)},
        "batch_sizes": {"synth": 8},
    }
    return _write(folder, "tiny.yaml", {"kind": 3}, data)


def two_dataset_run_config(folder: Path, num_samples: int = 80) -> Path:
    """Two datasets with a task each (``kind`` on ``a``, ``odd`` on ``b``): as clients
    (``--partition datasets``) they report different metrics."""
    data = {
        "data_modules": {
            "a": _synthetic("kind", 3, num_samples),
            "b": _synthetic("odd", 2, num_samples),
        },
        "batch_sizes": {"a": 8, "b": 8},
    }
    return _write(folder, "two.yaml", {"kind": 3, "odd": 2}, data)
