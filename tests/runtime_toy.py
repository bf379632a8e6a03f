"""Small in-test data modules and user-defined modules for the runtime tests.

``ToyDataModule`` emits contract batches ``{"dataset", "inputs", "targets"}`` from linear
rules over Gaussian inputs, with a resumable per-epoch batch order (``state_dict`` holds the
position), so tests do not depend on ``runtime.data``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn


def _targets(kind: str, x: Tensor, w: Tensor, num_classes: int) -> Tensor:
    scores = x @ w
    if kind == "classification":
        return scores[:, :num_classes].argmax(1)
    if kind == "multilabel":
        return (scores[:, :num_classes] > 0).float()
    return scores[:, 0]


class _Batches:
    """One epoch of batches from a resumable position."""

    def __init__(self, dm: ToyDataModule, split: str) -> None:
        self.dm, self.split = dm, split

    def __len__(self) -> int:
        return len(self.dm.batch_plan(self.split, 0))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        dm = self.dm
        epoch = dm.trainer.current_epoch if dm.trainer else 0
        plan = dm.batch_plan(self.split, epoch)
        start = dm.consumed if (self.split == "train" and epoch == dm.epoch) else 0
        for dataset, index in plan[start:]:
            yield dm.make_batch(self.split, dataset, index)


class ToyDataModule(L.LightningDataModule):
    """Datasets ``datasets`` (name -> its tasks); task kinds in ``task_kinds``
    (classification, multilabel, regression), ``num_classes`` per task (default 3)."""

    def __init__(
        self,
        datasets: dict[str, list[str]],
        task_kinds: dict[str, str] | None = None,
        num_classes: dict[str, int] | None = None,
        num_features: int = 8,
        num_samples: int = 192,
        batch_size: int = 16,
        seed: int = 0,
        missing_every: int = 0,
        predict_targets: bool = True,
    ) -> None:
        super().__init__()
        self.datasets = datasets
        self.dataset_tasks = datasets
        self.task_kinds = task_kinds or {}
        self.num_classes = num_classes or {}
        self.batch_size, self.seed = batch_size, seed
        self.predict_targets = predict_targets
        self.epoch, self.consumed = -1, 0
        g = torch.Generator().manual_seed(seed)
        self.data: dict[str, dict[str, Any]] = {}
        for name, tasks in datasets.items():
            x = torch.randn(num_samples, num_features, generator=g)
            targets = {}
            for task in tasks:
                w = torch.randn(num_features, 8, generator=g)
                kind = self.task_kinds.get(task, "classification")
                t = _targets(kind, x, w, self.num_classes.get(task, 3))
                if missing_every:
                    t[::missing_every] = float("nan") if kind == "regression" else -100
                targets[task] = t
            self.data[name] = {"x": x, "targets": targets}

    def _split_index(self, split: str, dataset: str) -> Tensor:
        n = len(self.data[dataset]["x"])
        cut = int(n * 0.75)
        return torch.arange(cut) if split == "train" else torch.arange(cut, n)

    def batch_plan(self, split: str, epoch: int) -> list[tuple[str, Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        plan = []
        for name in self.datasets:
            index = self._split_index(split, name)
            if split == "train":
                index = index[torch.randperm(len(index), generator=g)]
            plan += [(name, chunk) for chunk in index.split(self.batch_size)]
        if split == "train":
            plan = [plan[i] for i in torch.randperm(len(plan), generator=g).tolist()]
        return plan

    def make_batch(self, split: str, dataset: str, index: Tensor) -> dict[str, Any]:
        data = self.data[dataset]
        batch: dict[str, Any] = {"dataset": dataset, "inputs": data["x"][index]}
        if split != "predict" or self.predict_targets:
            batch["targets"] = {t: v[index] for t, v in data["targets"].items()}
        return batch

    def train_dataloader(self) -> _Batches:
        return _Batches(self, "train")

    def val_dataloader(self) -> _Batches:
        return _Batches(self, "val")

    def test_dataloader(self) -> _Batches:
        return _Batches(self, "val")

    def predict_dataloader(self) -> _Batches:
        return _Batches(self, "predict")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            if trainer.current_epoch != self.epoch:
                self.epoch, self.consumed = trainer.current_epoch, 0
            self.consumed += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch, self.consumed = state_dict["epoch"], state_dict["consumed"]


class SlowEncoder(nn.Module):
    """A linear encoder that sleeps in training, so a test can kill a run mid-epoch."""

    def __init__(
        self, in_features: int, out_features: int, sleep_s: float = 0.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)
        self.sleep_s = sleep_s

    def forward(self, inputs: Tensor) -> Tensor:
        if self.training and self.sleep_s:
            time.sleep(self.sleep_s)
        return self.dropout(torch.relu(self.linear(inputs)))


def toy_config(
    datasets: dict[str, list[str]] | None = None,
    merged: bool = True,
    task_kinds: dict[str, str] | None = None,
    max_epochs: int = 2,
    encoder: dict[str, Any] | None = None,
    ema_decay: float | None = None,
    run: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run config (as a dict) over ``ToyDataModule``; 3-class tasks, heads merged or not."""
    datasets = datasets or {"a": ["ta"], "b": ["tb"]}
    kinds = task_kinds or {}
    tasks = [t for ts in datasets.values() for t in ts]
    task_defs: dict[str, Any] = {}
    heads = {
        "classification": "ClassificationHead",
        "regression": "RegressionHead",
        "multilabel": "MultiLabelHead",
    }
    decoders: dict[str, Any] = {}
    for t in tasks:
        kind = kinds.get(t, "classification")
        if kind == "classification":
            task_defs[t] = {
                "class_path": "runtime.tasks.ClassificationTask",
                "init_args": {"class_names": ["x", "y", "z"]},
            }
        elif kind == "regression":
            task_defs[t] = {"class_path": "runtime.tasks.RegressionTask"}
        else:
            task_defs[t] = {
                "class_path": "runtime.tasks.MultiLabelTask",
                "init_args": {"num_labels": 3},
            }
        width = 1 if kind == "regression" else 3
        decoders[t] = [
            {
                "class_path": f"runtime.heads.{heads[kind]}",
                "init_args": {"in_features": 16, "num_outputs": width},
            }
        ]
    model_args: dict[str, Any] = {
        "encoder": [
            encoder
            or {
                "class_path": "runtime.encoders.MLPEncoder",
                "init_args": {"in_features": 8, "hidden_sizes": [16]},
            }
        ],
        "decoders": decoders,
    }
    if merged:
        model_args["decoders"] = {
            "ClassificationHead": [
                {
                    "class_path": "runtime.heads.ClassificationHead",
                    "init_args": {"in_features": 16, "num_outputs": 3 * len(tasks)},
                }
            ]
        }
        model_args["decoder_to_target"] = {"ClassificationHead": tasks}
        model_args["task_label_offsets"] = {
            t: {"offset": 3 * i, "num_outputs": 3} for i, t in enumerate(tasks)
        }
    module_args: dict[str, Any] = {
        "model": {"class_path": "runtime.model.MultiTaskModel", "init_args": model_args},
        "tasks": task_defs,
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.02}},
        "scheduler": {
            "class_path": "runtime.schedulers.WarmupCosine",
            "init_args": {"warmup_steps": 3},
        },
    }
    if ema_decay is not None:
        module_args["ema_decay"] = ema_decay
    return {
        "seed_everything": 0,
        "model": {"class_path": "runtime.module.MultiTaskModule", "init_args": module_args},
        "data": {
            "class_path": "runtime_toy.ToyDataModule",
            "init_args": {"datasets": datasets, "task_kinds": kinds},
        },
        "trainer": {
            "max_epochs": max_epochs,
            "accelerator": "cpu",
            "devices": 1,
            "log_every_n_steps": 2,
            "enable_model_summary": False,
            **(trainer or {}),
        },
        "run": {"num_threads": 1, **(run or {})},
    }


def two_synthetic_datasets(num_samples: int) -> dict[str, Any]:
    """A ``data`` section of two ``SyntheticDataModule`` datasets 'a' (task ta) and 'b' (task
    tb, another seed), 3-class, batches of 32, 10 % each for val and test."""

    def synthetic(task: str, seed: int) -> dict[str, Any]:
        return {
            "class_path": "runtime.data.SyntheticDataModule",
            "init_args": {
                "num_samples": num_samples,
                "input_shape": [8],
                "val_fraction": 0.1,
                "test_fraction": 0.1,
                "seed": seed,
                "tasks": {task: {"kind": "classification", "num_classes": 3}},
            },
        }

    return {
        "class_path": "runtime.data.MultiDatasetDataModule",
        "init_args": {
            "data_modules": {"a": synthetic("ta", 0), "b": synthetic("tb", 1)},
            "batch_sizes": {"a": 32, "b": 32},
            "dataset_tasks": {"a": ["ta"], "b": ["tb"]},
            "sample_mode": "random_cycle",
        },
    }
