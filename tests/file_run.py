"""A tiny run config over CSV files (``TensorFileDataModule`` inside the multi-dataset module),
for tests of what data loading and ``mtl-run --check`` refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_csv(path: Path, rows: int = 40, seed: int = 0, classes: int = 3) -> Path:
    """Columns f0..f3 (features), y (class id 0..classes-1), r (a real value)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    y = np.minimum(y, classes - 1)
    lines = ["f0,f1,f2,f3,y,r"]
    lines += [",".join(f"{v:.4f}" for v in x[i]) + f",{y[i]},{x[i, 2]:.4f}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def file_config(
    path: Path | str,
    classes: int = 3,
    regression: bool = False,
    data_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run config: one dataset 'a' read from ``path`` with task 't' (classification on
    column y, ``classes`` classes) and, with ``regression``, task 'r' on column r."""
    targets = {"t": "y", **({"r": "r"} if regression else {})}
    tasks: dict[str, Any] = {
        "t": {
            "class_path": "runtime.tasks.ClassificationTask",
            "init_args": {"num_classes": classes},
        }
    }
    decoders: dict[str, Any] = {
        "t": [
            {
                "class_path": "runtime.heads.ClassificationHead",
                "init_args": {"in_features": 8, "num_outputs": classes},
            }
        ]
    }
    if regression:
        tasks["r"] = {"class_path": "runtime.tasks.RegressionTask"}
        decoders["r"] = [
            {
                "class_path": "runtime.heads.RegressionHead",
                "init_args": {"in_features": 8, "num_outputs": 1},
            }
        ]
    module = {
        "class_path": "runtime.data.TensorFileDataModule",
        "init_args": {
            "path": str(path),
            "inputs": ["f0", "f1", "f2", "f3"],
            "targets": targets,
            "batch_size": 8,
            **(data_args or {}),
        },
    }
    return {
        "seed_everything": 0,
        "model": {
            "class_path": "runtime.module.MultiTaskModule",
            "init_args": {
                "model": {
                    "class_path": "runtime.model.MultiTaskModel",
                    "init_args": {
                        "encoder": [
                            {
                                "class_path": "runtime.encoders.MLPEncoder",
                                "init_args": {"in_features": 4, "hidden_sizes": [8]},
                            }
                        ],
                        "decoders": decoders,
                    },
                },
                "tasks": tasks,
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
            },
        },
        "data": {
            "class_path": "runtime.data.MultiDatasetDataModule",
            "init_args": {"data_modules": {"a": module}},
        },
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
        },
        "run": {"num_threads": 1},
    }


def synthetic_config(
    datasets: dict[str, dict[str, Any]], run: dict[str, Any] | None = None, max_epochs: int = 1
) -> dict[str, Any]:
    """A run config over ``SyntheticDataModule``s: dataset name -> its init_args (each with
    one 3-class classification task named ``t<dataset>``, unless given)."""
    modules, tasks, decoders = {}, {}, {}
    for name, args in datasets.items():
        spec = {"kind": "classification", "num_classes": 3}
        modules[name] = {
            "class_path": "runtime.data.SyntheticDataModule",
            "init_args": {"input_shape": [4], "batch_size": 8, "tasks": {f"t{name}": spec}, **args},
        }
        for task in modules[name]["init_args"]["tasks"]:
            tasks[task] = {
                "class_path": "runtime.tasks.ClassificationTask",
                "init_args": {"num_classes": 3},
            }
            decoders[task] = [
                {
                    "class_path": "runtime.heads.ClassificationHead",
                    "init_args": {"in_features": 8, "num_outputs": 3},
                }
            ]
    config = file_config("unused.csv")
    model = config["model"]["init_args"]
    model["tasks"] = tasks
    model["model"]["init_args"]["decoders"] = decoders
    config["data"]["init_args"]["data_modules"] = modules
    config["trainer"]["max_epochs"] = max_epochs
    config["run"].update(run or {})
    return config
