"""A tiny run config for the mtl-federate tests: a 4-unit MLP on 80 synthetic samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def tiny_run_config(folder: Path, num_samples: int = 80) -> Path:
    """Write the run config into ``folder`` and return its path."""
    config: dict[str, Any] = {
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
                                "init_args": {"in_features": 6, "hidden_sizes": [4]},
                            }
                        ],
                        "decoders": {
                            "kind": [
                                {
                                    "class_path": "runtime.heads.ClassificationHead",
                                    "init_args": {"in_features": 4, "num_outputs": 3},
                                }
                            ]
                        },
                    },
                },
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
                "tasks": {
                    "kind": {
                        "class_path": "runtime.tasks.ClassificationTask",
                        "init_args": {"num_classes": 3},
                    }
                },
            },
        },
        "data": {
            "class_path": "runtime.data.MultiDatasetDataModule",
            "init_args": {
                "num_workers": 0,
                "data_modules": {
                    "synth": {
                        "class_path": "runtime.data.SyntheticDataModule",
                        "init_args": {
                            "num_samples": num_samples,
                            "input_shape": [6],
                            "tasks": {"kind": {"kind": "classification", "num_classes": 3}},
                        },
                    }
                },
                "batch_sizes": {"synth": 8},
            },
        },
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 1,
        },
        "run": {"num_threads": 1},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
