"""Run directories with merged heads, one per head type, for the companion-command tests.

Configs use the real ``MultiDatasetDataModule`` over ``SyntheticDataModule`` datasets: dataset
``ds_a`` carries two tasks and ``ds_b`` one, so unmerging must restrict ``dataset_tasks``.
``fake_run`` writes a run directory without training (weights perturbed away from their
initialisation so every output row differs); ``toy_run_dir.train_toy_run`` trains one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

HIDDEN = 8

#: head kind -> (head class_path, task class_path, synthetic task kind, input shape, encoder)
KINDS: dict[str, tuple[str, str, str, list[int], dict[str, Any]]] = {
    "classification": (
        "runtime.heads.ClassificationHead",
        "runtime.tasks.ClassificationTask",
        "classification",
        [6],
        {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 6, "hidden_sizes": [HIDDEN]},
        },
    ),
    "frames": (
        "runtime.heads.PerPositionClassificationHead",
        "runtime.tasks.PerPositionClassificationTask",
        "per_position",
        [5, 6],
        {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 6, "hidden_sizes": [HIDDEN]},
        },
    ),
    "segmentation": (
        "runtime.heads.PerPositionClassificationHead",
        "runtime.tasks.PerPositionClassificationTask",
        "per_position",
        [3, 4, 4],
        {
            "class_path": "runtime.encoders.CNNEncoder",
            "init_args": {"in_channels": 3, "channels": [HIDDEN], "pool": "none"},
        },
    ),
    "conv_segmentation": (  # a user head whose label dim is a conv kernel's output channels
        "merged_runs.ConvSegmentationHead",
        "runtime.tasks.PerPositionClassificationTask",
        "per_position",
        [3, 4, 4],
        {
            "class_path": "runtime.encoders.CNNEncoder",
            "init_args": {"in_channels": 3, "channels": [HIDDEN], "pool": "none"},
        },
    ),
    "multilabel": (
        "runtime.heads.MultiLabelHead",
        "runtime.tasks.MultiLabelTask",
        "multilabel",
        [6],
        {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 6, "hidden_sizes": [HIDDEN]},
        },
    ),
    "regression": (
        "runtime.heads.RegressionHead",
        "runtime.tasks.RegressionTask",
        "regression",
        [6],
        {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 6, "hidden_sizes": [HIDDEN]},
        },
    ),
}
#: a task-conditioned trunk: one learned task-embedding row per task (``per_task_parameters``)
KINDS["task_conditioned"] = KINDS["classification"]
EXTRA_MODEL_ARGS: dict[str, dict[str, Any]] = {
    "task_conditioned": {
        "task_embedding": {
            "class_path": "runtime.task_embedding.TaskEmbedding",
            "init_args": {"dim": 4},
        },
        "trunk": {
            "class_path": "runtime.trunk.TaskTrunk",
            "init_args": {
                "in_features": HIDDEN,
                "layers": [
                    {"class_path": "runtime.trunk.TaskFiLM", "init_args": {"features": HIDDEN}}
                ],
            },
        },
    }
}
#: dataset -> task -> outputs of the task
LAYOUT = {"ds_a": {"ta": 3, "tb": 2}, "ds_b": {"tc": 4}}


class ConvSegmentationHead(nn.Module):
    """``[B, F, H, W] -> [B, C, H, W]`` with a 3x3 convolution (weight ``[C, F, 3, 3]``)."""

    def __init__(self, in_features: int, num_outputs: int) -> None:
        super().__init__()
        self.num_outputs = num_outputs
        self.conv = nn.Conv2d(in_features, num_outputs, 3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        return self.conv(features)


def _task_def(task_class: str, kind: str, width: int) -> dict[str, Any]:
    if kind == "regression":
        return {"class_path": task_class, "init_args": {"num_outputs": width}}
    if kind == "multilabel":
        return {"class_path": task_class, "init_args": {"num_labels": width}}
    return {"class_path": task_class, "init_args": {"class_names": [f"c{i}" for i in range(width)]}}


def merged_config(
    kind: str = "classification", merged: bool = True, max_epochs: int = 1
) -> dict[str, Any]:
    """A run config whose three tasks share one merged head of type ``kind``."""
    head, task_class, synth, shape, encoder = KINDS[kind]
    widths = {t: n for tasks in LAYOUT.values() for t, n in tasks.items()}
    model: dict[str, Any] = {"encoder": [encoder], **EXTRA_MODEL_ARGS.get(kind, {})}
    if merged:
        offsets, offset = {}, 0
        for task, width in widths.items():
            offsets[task] = {"offset": offset, "num_outputs": width}
            offset += width
        model["decoders"] = {
            "Merged": [
                {"class_path": head, "init_args": {"in_features": HIDDEN, "num_outputs": offset}}
            ]
        }
        model["decoder_to_target"] = {"Merged": list(widths)}
        model["task_label_offsets"] = offsets
    else:
        model["decoders"] = {
            t: [{"class_path": head, "init_args": {"in_features": HIDDEN, "num_outputs": n}}]
            for t, n in widths.items()
        }
    data_modules = {
        name: {
            "class_path": "runtime.data.SyntheticDataModule",
            "init_args": {
                "num_samples": 80,
                "input_shape": shape,
                "seed": i,
                "batch_size": 16,
                "tasks": {
                    t: (
                        {"kind": synth, "num_outputs": n}
                        if synth == "regression"
                        else {"kind": synth, "num_classes": n}
                    )
                    for t, n in tasks.items()
                },
            },
        }
        for i, (name, tasks) in enumerate(LAYOUT.items())
    }
    return {
        "seed_everything": 0,
        "model": {
            "class_path": "runtime.module.MultiTaskModule",
            "init_args": {
                "model": {"class_path": "runtime.model.MultiTaskModel", "init_args": model},
                "tasks": {t: _task_def(task_class, synth, n) for t, n in widths.items()},
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
            },
        },
        "data": {
            "class_path": "runtime.data.MultiDatasetDataModule",
            "init_args": {
                "data_modules": data_modules,
                "sample_mode": "round_robin",
                "dataset_tasks": {d: list(ts) for d, ts in LAYOUT.items()},
            },
        },
        "trainer": {
            "max_epochs": max_epochs,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
        },
        "run": {"num_threads": 1},
    }


def write_checkpoint(path: Path, state: dict[str, Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": state, "epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.6.0"},
        path,
    )


def fake_run(run_dir: Path, config: dict[str, Any], seed: int = 0) -> Path:
    """A run directory with random (perturbed) weights in best.ckpt and last.ckpt."""
    from runtime.rundir import build_objects

    torch.manual_seed(seed)
    module, _ = build_objects(config, with_data=False)
    state = {
        k: v + 0.3 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in module.state_dict().items()
    }
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "run_info.json").write_text(json.dumps({"subcommand": "fit"}))
    for name in ("best.ckpt", "last.ckpt"):
        write_checkpoint(run_dir / "checkpoints" / name, state)
    return run_dir
