"""Run configs of the tests: :func:`run_config`, the one skeleton (model, multi-dataset
data, one CPU), and over it a tiny config over CSV files (``TensorFileDataModule``, for tests
of what data loading and ``mtl-run --check`` refuse) and one over synthetic datasets."""

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
    decoders = {"t": head("ClassificationHead", 8, classes)}
    if regression:
        tasks["r"] = {"class_path": "runtime.tasks.RegressionTask"}
        decoders["r"] = head("RegressionHead", 8, 1)
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
    return run_config(
        mlp_encoder(4, 8),
        decoders,
        tasks,
        {"data_modules": {"a": module}},
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        trainer={
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
        },
    )


def head(cls: str, in_features: int, num_outputs: int) -> list[dict[str, Any]]:
    """A decoder list of one ``runtime.heads.<cls>``."""
    init = {"in_features": in_features, "num_outputs": num_outputs}
    return [{"class_path": f"runtime.heads.{cls}", "init_args": init}]


def mlp_encoder(in_features: int, width: int, **args: Any) -> list[dict[str, Any]]:
    """An ``encoder`` list of one ``MLPEncoder`` with one hidden layer of ``width``."""
    init = {"in_features": in_features, "hidden_sizes": [width], **args}
    return [{"class_path": "runtime.encoders.MLPEncoder", "init_args": init}]


def run_config(
    encoder: list[dict[str, Any]],
    decoders: dict[str, Any],
    tasks: dict[str, Any],
    data: dict[str, Any],
    optimizer: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The run config every test builds: a ``MultiTaskModule`` over a ``MultiTaskModel``
    (``encoder``, ``decoders``) with ``tasks``, ``data`` the init_args of a
    ``MultiDatasetDataModule``, one epoch on one CPU device (``trainer`` adds to it) and one
    thread."""
    module: dict[str, Any] = {
        "model": {
            "class_path": "runtime.model.MultiTaskModel",
            "init_args": {"encoder": encoder, "decoders": decoders},
        },
        "tasks": tasks,
    }
    if optimizer is not None:
        module["optimizer"] = optimizer
    return {
        "seed_everything": seed,
        "model": {"class_path": "runtime.module.MultiTaskModule", "init_args": module},
        "data": {"class_path": "runtime.data.MultiDatasetDataModule", "init_args": data},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, **(trainer or {})},
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
            decoders[task] = head("ClassificationHead", 8, 3)
    config = file_config("unused.csv")
    model = config["model"]["init_args"]
    model["tasks"] = tasks
    model["model"]["init_args"]["decoders"] = decoders
    config["data"]["init_args"]["data_modules"] = modules
    config["trainer"]["max_epochs"] = max_epochs
    config["run"].update(run or {})
    return config
