"""Generated wearable-sensor recordings: 6-channel sequences with activity and user labels.

A small, seeded stand-in for human-activity-recognition data (nothing is downloaded), used
by the self-supervised example (docs/examples/ssl.md). Each recording is ``[length, 6]``: a
3-axis accelerometer and a 3-axis gyroscope. An activity sets the rhythm (base frequency and a
second harmonic) and how strongly each axis moves; a user changes it - their own pace, sensor
gains, offsets and the way the device sits on the body (a rotation of both 3-axis triples) -
so the same activity looks different from one user to the next. Phases are random, so a
linear model on the raw samples does poorly: features that see rhythm help.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.data.base import TaskTensorDataset, TensorSplitModule, standardize_
from runtime.data.errors import DataConfigError
from runtime.data.validate import Source

ACTIVITIES = ("rest", "walk", "run", "stairs", "cycle", "jump")
LABEL_SETS = ("activity", "user")
CHANNELS = 6


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A random 3-D rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


class SimulatedActivityModule(TensorSplitModule):
    """Generated activity recordings of several users, ``[length, 6]`` per sample.

    Args:
        num_users: users; each records ``samples_per_user`` windows spread over activities.
        samples_per_user: windows per user (activities drawn uniformly).
        num_activities: activities used, the first of ``rest, walk, run, stairs, cycle, jump``.
        length: time steps per window.
        user_variation: how much users differ (0: all alike; larger: further apart).
        noise: sensor noise standard deviation (signals have roughly unit scale).
        targets: task name -> label set, ``activity`` or ``user``.
        val_fraction, test_fraction, seed: the split (stratified by activity), fixed by seed;
            the seed also fixes the recordings.
        standardize: z-score each channel with training statistics.
        batch_size: fallback batch size (see :class:`runtime.data.base.DatasetModule`).
    """

    def __init__(
        self,
        num_users: int = 6,
        samples_per_user: int = 100,
        num_activities: int = 5,
        length: int = 64,
        user_variation: float = 1.5,
        noise: float = 0.8,
        targets: dict[str, str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        standardize: bool = True,
        batch_size: int = 32,
    ) -> None:
        super().__init__(val_fraction, test_fraction, seed, batch_size)
        targets = dict(targets) if targets is not None else {"activity": "activity"}
        for task, label_set in targets.items():
            if label_set not in LABEL_SETS:
                raise DataConfigError(
                    f"no label set '{label_set}'; choose one of {', '.join(LABEL_SETS)}",
                    key=("targets", task),
                )
        checks = {
            "num_users": num_users >= 1,
            "samples_per_user": samples_per_user >= 1,
            "num_activities": 2 <= num_activities <= len(ACTIVITIES),
            "length": length >= 4,
            "user_variation": user_variation >= 0,
            "noise": noise >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise DataConfigError(
                    f"{key} is out of range (num_users, samples_per_user >= 1; "
                    f"num_activities 2..{len(ACTIVITIES)}; length >= 4; variation, noise >= 0)",
                    key=(key,),
                )
        self.num_users = num_users
        self.samples_per_user = samples_per_user
        self.num_activities = num_activities
        self.length = length
        self.user_variation = user_variation
        self.noise = noise
        self.targets = targets
        self.standardize = standardize

    @property
    def tasks(self) -> list[str]:
        return list(self.targets)

    @property
    def activity_names(self) -> list[str]:
        return list(ACTIVITIES[: self.num_activities])

    def source(self) -> Source:
        return Source(name="generated activity recordings", columns=self.targets)

    def recordings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x [N, length, 6] float32, activity [N], user [N])`` for the seed."""
        rng = np.random.default_rng([self.seed, 20])
        k = self.num_activities
        freq = 1.0 + 1.6 * np.arange(k) + rng.uniform(0, 0.5, k)  # cycles per window
        amp = rng.uniform(0.2, 1.0, (k, CHANNELS)) * (0.3 + np.arange(k)[:, None] / k)
        harmonic = rng.uniform(0.0, 0.6, (k, CHANNELS))
        offset = rng.normal(0, 0.5, (k, CHANNELS))
        t = np.arange(self.length) / self.length
        xs, acts, users = [], [], []
        v = self.user_variation
        for user in range(self.num_users):
            urng = np.random.default_rng([self.seed, 21, user])
            pace = np.exp(0.15 * v * urng.standard_normal())
            gain = np.exp(0.25 * v * urng.standard_normal(CHANNELS))
            shift = 0.4 * v * urng.standard_normal(CHANNELS)
            rotation = _rotation(urng) if v > 0 else np.eye(3)
            mix = np.eye(3) + min(v, 1.0) * (rotation - np.eye(3))
            activity = urng.integers(0, k, self.samples_per_user)
            n = self.samples_per_user
            f = freq[activity] * pace * np.exp(0.05 * urng.standard_normal(n))
            phase = urng.uniform(0, 2 * np.pi, (n, 1, CHANNELS))
            wave = 2 * np.pi * f[:, None, None] * t[None, :, None]
            signal = amp[activity][:, None, :] * np.sin(wave + phase)
            signal += harmonic[activity][:, None, :] * np.sin(2 * wave + 2 * phase + 0.7)
            signal += offset[activity][:, None, :]
            signal = np.concatenate([signal[..., :3] @ mix.T, signal[..., 3:] @ mix.T], -1)
            signal = signal * gain + shift
            signal += self.noise * urng.standard_normal(signal.shape)
            xs.append(signal)
            acts.append(activity)
            users.append(np.full(n, user))
        return (
            np.concatenate(xs).astype(np.float32),
            np.concatenate(acts).astype(np.int64),
            np.concatenate(users).astype(np.int64),
        )

    def load(self) -> TaskTensorDataset:
        x, activity, user = self.recordings()
        labels = {"activity": activity, "user": user}
        self._strata = activity
        targets = {task: torch.from_numpy(labels[ls]) for task, ls in self.targets.items()}
        return TaskTensorDataset(torch.from_numpy(x), targets)

    def strata(self, data: TaskTensorDataset) -> np.ndarray | None:
        return self._strata

    def fit_transform(self, train: TaskTensorDataset, others: list[TaskTensorDataset]) -> None:
        if self.standardize:
            standardize_(train.inputs, [o.inputs for o in others], dim=(0, 1))
