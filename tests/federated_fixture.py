"""A tiny run config for the mtl-federate tests: a 4-unit MLP on 80 synthetic samples."""

from __future__ import annotations

from pathlib import Path

import yaml
from file_run import head, mlp_encoder, run_config


def tiny_run_config(folder: Path, num_samples: int = 80) -> Path:
    """Write the run config into ``folder`` and return its path."""
    synth = {
        "class_path": "runtime.data.SyntheticDataModule",
        "init_args": {
            "num_samples": num_samples,
            "input_shape": [6],
            "tasks": {"kind": {"kind": "classification", "num_classes": 3}},
        },
    }
    config = run_config(
        mlp_encoder(6, 4),
        {"kind": head("ClassificationHead", 4, 3)},
        {
            "kind": {
                "class_path": "runtime.tasks.ClassificationTask",
                "init_args": {"num_classes": 3},
            }
        },
        {"num_workers": 0, "data_modules": {"synth": synth}, "batch_sizes": {"synth": 8}},
        optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        trainer={"log_every_n_steps": 1},
    )
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
