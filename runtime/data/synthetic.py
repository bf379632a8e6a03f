"""A seeded synthetic multitask dataset whose labels are learnable functions of the inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from runtime.data.base import TaskTensorDataset, TensorSplitModule
from runtime.data.errors import DataConfigError

TASK_KINDS = ("classification", "multilabel", "regression", "per_position")
_TASK_KEYS = {"kind", "num_classes", "num_outputs", "missing_fraction"}


def _check_task(name: str, spec: dict[str, Any], input_rank: int) -> dict[str, Any]:
    """A validated copy of one task spec, with defaults filled in."""
    key = ("tasks", name)
    if not isinstance(spec, dict) or spec.get("kind") not in TASK_KINDS:
        raise DataConfigError(
            f"each task needs `kind`: one of {', '.join(TASK_KINDS)}; got {spec!r}", key=key
        )
    unknown = set(spec) - _TASK_KEYS
    if unknown:
        raise DataConfigError(
            f"unknown task keys {sorted(unknown)}; allowed: {sorted(_TASK_KEYS)}", key=key
        )
    kind = spec["kind"]
    out = {"num_classes": 2, "num_outputs": 1, **spec}
    if kind != "regression" and int(out["num_classes"]) < (1 if kind == "multilabel" else 2):
        raise DataConfigError(f"num_classes too small: {out['num_classes']}", key=key)
    if kind == "per_position" and input_rank == 1:
        raise DataConfigError(
            "per_position labels need a sequence [T, F] or image [C, H, W] input_shape", key=key
        )
    return out


class SyntheticDataModule(TensorSplitModule):
    """Random inputs with one label set per task, each a noisy function of the inputs.

    Args:
        num_samples: samples before the train/val/test split.
        input_shape: [F] tabular, [T, F] sequence or [C, H, W] image; inputs are N(0, 1).
        tasks: name -> ``{"kind": ..., "num_classes": K, "num_outputs": D,
            "missing_fraction": p}``. Kinds: "classification" (int64 [B], argmax of a random
            linear map of the pooled input), "multilabel" (float {0,1} [B, K], signs of such a
            map), "regression" (float [B], or [B, D] when num_outputs > 1, a linear map), and
            "per_position" (int64 [B, T] frame-wise, or [B, H, W] segmentation, the argmax of
            a per-position linear map of the features/channels).
        missing_fraction: share of samples per task whose label is missing (-100, or NaN for
            regression); a task's own ``missing_fraction`` overrides it.
        noise: label noise scale (relative to the signal's unit scale).
    """

    def __init__(
        self,
        num_samples: int = 256,
        input_shape: list[int] | None = None,
        tasks: dict[str, dict[str, Any]] | None = None,
        missing_fraction: float = 0.0,
        noise: float = 0.1,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        super().__init__(val_fraction, test_fraction, seed, batch_size)
        input_shape = list(input_shape) if input_shape is not None else [16]
        if not 1 <= len(input_shape) <= 3 or min(input_shape) < 1:
            raise DataConfigError(
                f"input_shape must be [F], [T, F] or [C, H, W] with positive sizes, "
                f"got {input_shape}",
                key=("input_shape",),
            )
        if num_samples < 1:
            raise DataConfigError("num_samples must be positive", key=("num_samples",))
        tasks = tasks or {"cls": {"kind": "classification", "num_classes": 3}}
        self.num_samples = num_samples
        self.input_shape = input_shape
        self.task_specs = {n: _check_task(n, s, len(input_shape)) for n, s in tasks.items()}
        self.missing_fraction = missing_fraction
        self.noise = noise

    @property
    def tasks(self) -> list[str]:
        return list(self.task_specs)

    def _features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(pooled [N, F], per-position [N, ..., F]) views of the inputs, each ~N(0, 1)."""
        if x.ndim == 2:
            return x, None
        if x.ndim == 3:  # [N, T, F]
            return x.mean(axis=1) * np.sqrt(x.shape[1]), x
        per_pixel = x.transpose(0, 2, 3, 1)  # [N, H, W, C]
        return x.mean(axis=(2, 3)) * np.sqrt(x.shape[2] * x.shape[3]), per_pixel

    def _labels(self, spec: dict[str, Any], x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pooled, per_position = self._features(x)
        feats = per_position if spec["kind"] == "per_position" else pooled
        width = spec["num_outputs"] if spec["kind"] == "regression" else spec["num_classes"]
        weight = rng.standard_normal((feats.shape[-1], width)) / np.sqrt(feats.shape[-1])
        signal = feats @ weight
        signal = signal + self.noise * rng.standard_normal(signal.shape)
        if spec["kind"] == "multilabel":
            return (signal > 0).astype(np.float32)
        if spec["kind"] == "regression":
            return signal[:, 0].astype(np.float32) if width == 1 else signal.astype(np.float32)
        return signal.argmax(axis=-1).astype(np.int64)

    def load(self) -> TaskTensorDataset:
        rng = np.random.default_rng([self.seed, 0])
        x = rng.standard_normal((self.num_samples, *self.input_shape)).astype(np.float32)
        targets = {}
        for i, (name, spec) in enumerate(self.task_specs.items()):
            task_rng = np.random.default_rng([self.seed, 1, i])
            y = self._labels(spec, x, task_rng)
            fraction = spec.get("missing_fraction", self.missing_fraction)
            missing = task_rng.random(self.num_samples) < fraction
            y[missing] = np.nan if spec["kind"] == "regression" else -100
            targets[name] = torch.from_numpy(y)
        return TaskTensorDataset(torch.from_numpy(x), targets)
