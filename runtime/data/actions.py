"""Generated frame-wise action sequences with action-dependent keypoint trajectories.

A stand-in for video/pose behaviour analysis (per-frame features from a frozen video or pose
model, frame labels, tracked keypoints) that is generated at run time from a seed, so the
suite needs no download. Each sequence is a chain of action segments; each action has its
own feature signature, body posture and movement (keypoints oscillate around the action's
posture at the action's own frequency), and keypoints drop out in occlusion bursts.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.data.base import TaskTensorDataset, TensorSplitModule, standardize_
from runtime.data.errors import DataConfigError

#: default share of segments per class (8 classes, the last two rare)
DEFAULT_FREQUENCIES = (0.2, 0.18, 0.16, 0.14, 0.12, 0.1, 0.06, 0.04)


class ActionSegmentsDataModule(TensorSplitModule):
    """Sequences ``[T, num_features]`` of per-frame features with two label sets:

    * ``action_task``: int64 ``[T]`` frame labels, segments of ``segment_length`` frames whose
      classes follow ``class_frequencies`` (consecutive segments differ);
    * ``keypoint_task``: float32 ``[T, 2 * num_keypoints]`` (x, y per keypoint), NaN where a
      keypoint is missing (about ``missing_keypoints`` of them, in bursts); ``None`` leaves
      the task out (a single-task baseline on the same sequences).

    A frame's features are its action's signature plus a random linear map of its keypoints
    plus Gaussian noise of scale ``noise``: one frame alone is ambiguous, a few frames of
    context are not. Inputs are standardized with training statistics.

    Args:
        num_sequences: sequences before the train/val/test split.
        seq_len: frames per sequence.
        num_features: features per frame.
        num_classes: action classes (or give ``class_names``).
        class_names: names of the actions (their count is the number of classes).
        class_frequencies: relative share of segments per class (normalized); default: 8
            classes from 20% down to 4% (the last two rare).
        segment_length: [min, max] frames per segment.
        num_keypoints: tracked keypoints (2 values each).
        missing_keypoints: share of keypoint values missing, in [0, 1).
        noise: feature noise scale.
        action_signal: scale of the action's own signature in the features (per feature);
            the rest of what tells the actions apart shows only through the keypoints
            (posture and movement), so lower values make the keypoints matter more.
    """

    def __init__(
        self,
        num_sequences: int = 240,
        seq_len: int = 128,
        num_features: int = 32,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        class_frequencies: list[float] | None = None,
        segment_length: list[int] | None = None,
        num_keypoints: int = 6,
        missing_keypoints: float = 0.15,
        noise: float = 2.0,
        action_signal: float = 1.0,
        action_task: str = "actions",
        keypoint_task: str | None = "keypoints",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        super().__init__(val_fraction, test_fraction, seed, batch_size)
        self.class_names = self._class_names(num_classes, class_names, class_frequencies)
        count = len(self.class_names)
        freqs = np.asarray(
            class_frequencies if class_frequencies is not None else DEFAULT_FREQUENCIES[:count],
            dtype=np.float64,
        )
        if len(freqs) != count or (freqs < 0).any() or freqs.sum() <= 0:
            raise DataConfigError(
                f"class_frequencies needs {count} non-negative values with a positive sum, "
                f"got {class_frequencies}",
                key=("class_frequencies",),
            )
        self.class_frequencies = freqs / freqs.sum()
        low, high = segment_length if segment_length is not None else (8, 40)
        if not 1 <= low <= high:
            raise DataConfigError(
                f"segment_length must be [min, max] with 1 <= min <= max, got {segment_length}",
                key=("segment_length",),
            )
        for key, value in (
            ("num_sequences", num_sequences),
            ("seq_len", seq_len),
            ("num_features", num_features),
            ("num_keypoints", num_keypoints),
        ):
            if value < 1:
                raise DataConfigError(f"{key} must be positive, got {value}", key=(key,))
        if not 0.0 <= missing_keypoints < 1.0:
            raise DataConfigError(
                f"missing_keypoints must lie in [0, 1), got {missing_keypoints}",
                key=("missing_keypoints",),
            )
        for key, value in (("noise", noise), ("action_signal", action_signal)):
            if value < 0:
                raise DataConfigError(f"{key} must be >= 0, got {value}", key=(key,))
        if keypoint_task == action_task:
            raise DataConfigError(
                f"action_task and keypoint_task are both '{action_task}': give them two names",
                key=("keypoint_task",),
            )
        self.num_sequences = num_sequences
        self.seq_len = seq_len
        self.num_features = num_features
        self.segment_length = (int(low), int(high))
        self.num_keypoints = num_keypoints
        self.missing_keypoints = missing_keypoints
        self.noise = noise
        self.action_signal = action_signal
        self.action_task = action_task
        self.keypoint_task = keypoint_task

    @staticmethod
    def _class_names(
        count: int | None, names: list[str] | None, frequencies: list[float] | None
    ) -> list[str]:
        if names is not None:
            if count is not None and count != len(names):
                raise DataConfigError(
                    f"class_names has {len(names)} entries but num_classes is {count}",
                    key=("class_names",),
                )
            count = len(names)
        elif count is None:
            count = len(frequencies) if frequencies is not None else len(DEFAULT_FREQUENCIES)
        if count < 2:
            raise DataConfigError(f"need at least 2 classes, got {count}", key=("num_classes",))
        if count > len(DEFAULT_FREQUENCIES) and frequencies is None:
            raise DataConfigError(
                f"{count} classes: give class_frequencies (the default covers "
                f"{len(DEFAULT_FREQUENCIES)})",
                key=("class_frequencies",),
            )
        return [str(n) for n in names] if names is not None else [str(i) for i in range(count)]

    @property
    def tasks(self) -> list[str]:
        return [self.action_task] + ([self.keypoint_task] if self.keypoint_task else [])

    def _labels(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Frame labels ``[N, T]`` and each frame's offset inside its segment."""
        n, t = self.num_sequences, self.seq_len
        labels = np.empty((n, t), dtype=np.int64)
        offsets = np.empty((n, t), dtype=np.int64)
        classes = len(self.class_names)
        low, high = self.segment_length
        for row in range(n):
            pos, previous = 0, -1
            while pos < t:
                probs = self.class_frequencies.copy()
                if previous >= 0 and probs.sum() > probs[previous]:
                    probs[previous] = 0.0  # consecutive segments differ
                label = int(rng.choice(classes, p=probs / probs.sum()))
                length = int(rng.integers(low, high + 1))
                end = min(t, pos + length)
                labels[row, pos:end] = label
                offsets[row, pos:end] = np.arange(end - pos)
                pos, previous = end, label
        return labels, offsets

    def _keypoints(
        self, labels: np.ndarray, offsets: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """``[N, T, K, 2]`` keypoints: the action's posture plus its oscillation."""
        classes, k = len(self.class_names), self.num_keypoints
        base = rng.uniform(-1, 1, (k, 2))
        posture = rng.normal(0, 0.5, (classes, k, 2))
        amplitude = rng.uniform(0.1, 0.6, (classes, k, 2))
        frequency = rng.uniform(0.03, 0.15, classes)
        phase = rng.uniform(0, 2 * np.pi, (classes, k, 2))
        angle = 2 * np.pi * frequency[labels][..., None, None] * offsets[..., None, None]
        wave = np.sin(angle + phase[labels])
        return base + posture[labels] + amplitude[labels] * wave

    def _missing(self, rng: np.random.Generator) -> np.ndarray:
        """``[N, T, K]`` occlusion bursts: smoothed noise above its quantile."""
        shape = (self.num_sequences, self.seq_len, self.num_keypoints)
        if self.missing_keypoints == 0:
            return np.zeros(shape, dtype=bool)
        width = 9
        raw = rng.standard_normal((shape[0], shape[1] + width - 1, shape[2]))
        summed = np.cumsum(raw, axis=1)
        smooth = summed[:, width - 1 :] - np.concatenate(
            [np.zeros_like(summed[:, :1]), summed[:, :-width]], axis=1
        )
        return smooth > np.quantile(smooth, 1 - self.missing_keypoints)

    def load(self) -> TaskTensorDataset:
        rng = np.random.default_rng([self.seed, 19])
        labels, offsets = self._labels(rng)
        keypoints = self._keypoints(labels, offsets, rng)
        f, classes = self.num_features, len(self.class_names)
        signature = rng.standard_normal((classes, f))
        kp_flat = keypoints.reshape(*labels.shape, -1)
        mixing = rng.standard_normal((kp_flat.shape[-1], f)) / np.sqrt(kp_flat.shape[-1])
        features = self.action_signal * signature[labels] + kp_flat @ mixing
        features = features + self.noise * rng.standard_normal(features.shape)
        targets = {self.action_task: torch.from_numpy(labels)}
        if self.keypoint_task:
            values = keypoints.copy()
            values[self._missing(rng)] = np.nan  # both coordinates of a hidden keypoint
            targets[self.keypoint_task] = torch.from_numpy(
                values.reshape(kp_flat.shape).astype(np.float32)
            )
        return TaskTensorDataset(torch.from_numpy(features.astype(np.float32)), targets)

    def fit_transform(self, train: TaskTensorDataset, others: list[TaskTensorDataset]) -> None:
        standardize_(train.inputs, [o.inputs for o in others], dim=(0, 1))
