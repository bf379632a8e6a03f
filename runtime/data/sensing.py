"""Generated WiFi-sensing sequences: channel-state amplitudes ``[T, F]`` (time x subcarriers).

A small physical story, enough for the labels to be learnable from the signal and not from a
shortcut: the channel of a room is a static profile over subcarriers (a few random smooth
components, new for every recording), and whatever moves adds reflected paths. A path with
delay ``tau`` and Doppler phase ``phi(t)`` adds ``a(t) * cos(phi(t) + 2 pi k tau)`` on
subcarrier ``k``, so motion shows up as a time pattern (how fast, how regular: the activity or
source) times a subcarrier pattern (the path delays: the person's body and position).

- ``motion_source``: what moves: nothing (``empty``), a ``human``, a ``pet`` (weak, fast,
  irregular bursts), a ``robot_vacuum`` (slow steady motion whose delay drifts across the
  subcarriers) or a ``fan`` (weak, fast, strictly periodic).
- ``activity``: what a human does: ``walk`` and ``run`` (periodic at the person's gait rate, run
  faster and stronger), ``sit_down`` / ``stand_up`` (one slowing / quickening movement that
  leaves the static channel lower / higher), ``fall`` (a short violent burst, then stillness)
  or ``wave`` (weak periodic arm motion in on/off bursts).
- ``identity``: who: each person has a signature (body size scales the amplitude, a personal
  gait rate scales periodic motion, and two personal path delays shape the subcarrier pattern).

Recordings get random phases, onsets, amplitude gain and Gaussian noise (``noise``, relative to
a walking person's reflection). A recording of a non-human source has no activity or identity
label (-100). Everything is drawn from ``seed``: the same seed gives the same recordings.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.data.base import TaskTensorDataset, TensorSplitModule, standardize_
from runtime.data.errors import DataConfigError

SOURCES = ("empty", "human", "pet", "robot_vacuum", "fan")
ACTIVITIES = ("walk", "run", "sit_down", "stand_up", "fall", "wave")
SENSING_TASKS = ("motion_source", "activity", "identity")


class _Person:
    """One person's signature: size, gait rate and the delays of their two main paths."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.size = rng.uniform(0.7, 1.3)
        self.gait = rng.uniform(0.8, 1.25)
        self.delays = rng.uniform(0.0, 0.12, size=2)
        self.weights = np.array([1.0, rng.uniform(0.3, 0.9)])


def _bump(t: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - center) / width) ** 2)


class _Recorder:
    """Draws one recording ``[T, F]`` for a given source / activity / person."""

    def __init__(self, seq_len: int, subcarriers: int, sample_rate: float, noise: float) -> None:
        self.t = np.arange(seq_len) / sample_rate
        self.k = np.arange(subcarriers)[None, :]
        self.duration = seq_len / sample_rate
        self.noise = noise

    def static(self, rng: np.random.Generator) -> np.ndarray:
        freqs = rng.uniform(0.002, 0.03, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        amps = rng.uniform(0.1, 0.3, size=3)
        profile = 1.0 + sum(
            a * np.cos(2 * np.pi * f * self.k + p)
            for a, f, p in zip(amps, freqs, phases, strict=True)
        )
        return np.broadcast_to(profile, (len(self.t), self.k.shape[1])).copy()

    def _path(
        self, envelope: np.ndarray, phase: np.ndarray, delay: np.ndarray | float
    ) -> np.ndarray:
        delay = np.asarray(delay)
        delay = delay[:, None] if delay.ndim == 1 else delay
        return envelope[:, None] * np.cos(phase[:, None] + 2 * np.pi * self.k * delay)

    def human(
        self, activity: str, person: _Person, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(dynamic part, multiplicative change of the static channel) of a person's activity."""
        t, d = self.t, self.duration
        start = rng.uniform(0, 2 * np.pi)
        level = np.ones_like(t)
        if activity in ("walk", "run"):
            rate = (1.6 if activity == "walk" else 2.8) * person.gait
            speed = (1.2 if activity == "walk" else 2.6) * person.gait
            envelope = (1.0 if activity == "walk" else 1.4) * (
                0.7 + 0.3 * np.cos(2 * np.pi * rate * t)
            )
            phase = start + 2 * np.pi * speed * t + 1.5 * np.sin(2 * np.pi * rate * t)
        elif activity in ("sit_down", "stand_up"):
            center, width = rng.uniform(0.35, 0.65) * d, 0.12 * d
            envelope = 1.2 * _bump(t, center, width)
            ramp = 1 / (1 + np.exp(-(t - center) / (0.05 * d)))
            # sitting slows down, standing up speeds up through the movement
            speed = 2.0 - 1.5 * ramp if activity == "sit_down" else 0.5 + 1.5 * ramp
            phase = start + 2 * np.pi * np.cumsum(speed) * (t[1] - t[0])
            level = 1 - 0.12 * ramp if activity == "sit_down" else 1 + 0.12 * ramp
        elif activity == "fall":
            center = rng.uniform(0.3, 0.7) * d
            envelope = 2.0 * _bump(t, center, 0.04 * d)
            phase = start + 2 * np.pi * 6.0 * t
            level = 1 - 0.2 / (1 + np.exp(-(t - center) / (0.01 * d)))
        else:  # wave
            bursts = (np.cos(2 * np.pi * 0.5 * t + rng.uniform(0, 2 * np.pi)) > 0).astype(float)
            envelope = 0.5 * bursts
            phase = start + 1.2 * np.sin(2 * np.pi * 2.0 * person.gait * t)
        delays = person.delays + rng.normal(0, 0.004, size=2)
        dynamic = sum(
            w * self._path(envelope, phase, tau)
            for w, tau in zip(person.weights, delays, strict=True)
        )
        return person.size * dynamic, level[:, None]

    def other(self, source: str, rng: np.random.Generator) -> np.ndarray:
        """The dynamic part of a non-human source (zero for an empty room)."""
        t = self.t
        start = rng.uniform(0, 2 * np.pi)
        delay = rng.uniform(0.0, 0.12)
        if source == "empty":
            return np.zeros((len(t), self.k.shape[1]))
        if source == "pet":
            speed = 4.0 + np.cumsum(rng.normal(0, 0.6, size=len(t))) * 0.1
            bursts = np.convolve(rng.random(len(t)) < 0.05, np.ones(10), mode="same").clip(0, 1)
            return self._path(
                0.8 * bursts, start + 2 * np.pi * np.cumsum(speed) * (t[1] - t[0]), delay
            )
        if source == "robot_vacuum":
            drift = delay + rng.choice([-1, 1]) * 0.04 * t / self.duration
            return self._path(0.6 * np.ones_like(t), start + 2 * np.pi * 0.5 * t, drift)
        return self._path(0.5 * np.ones_like(t), start + 2 * np.pi * 8.0 * t, delay)  # fan

    def record(
        self, static: np.ndarray, dynamic: np.ndarray, level: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        gain = rng.uniform(0.8, 1.2)
        signal = static * level * (1 + 0.5 * dynamic)
        return gain * (signal + self.noise * 0.5 * rng.standard_normal(signal.shape))


class SensingDataModule(TensorSplitModule):
    """Generated WiFi channel-state sequences ``[seq_len, num_subcarriers]`` with sensing labels.

    Args:
        tasks: which labels the recordings carry, any of ``motion_source`` (5 classes:
            empty, human, pet, robot_vacuum, fan), ``activity`` (6: walk, run, sit_down,
            stand_up, fall, wave) and ``identity`` (``num_people`` classes). Without
            ``motion_source`` every recording is of a person; with it, a fifth are, and the
            others have no activity or identity label (-100).
        num_samples: recordings before the train/val/test split.
        seq_len: time steps T per recording.
        num_subcarriers: features F (subcarriers) per time step.
        num_people: people in the recordings (each with a signature).
        sample_rate: time steps per second, which sets how fast the motions look.
        noise: measurement noise relative to a walking person's reflection.
        people_seed: draws the people's signatures; datasets sharing it share the people.
        remove_static: subtract each recording's mean over time per subcarrier (static
            component removal, the usual first step of CSI pipelines), so the room's static
            channel does not drown the motion.
        standardize: z-score every subcarrier with the training split's statistics.
    """

    def __init__(
        self,
        tasks: list[str] | None = None,
        num_samples: int = 600,
        seq_len: int = 160,
        num_subcarriers: int = 52,
        num_people: int = 6,
        sample_rate: float = 50.0,
        noise: float = 0.5,
        people_seed: int = 0,
        remove_static: bool = True,
        standardize: bool = True,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        super().__init__(val_fraction, test_fraction, seed, batch_size)
        tasks = list(tasks) if tasks is not None else list(SENSING_TASKS)
        unknown = [t for t in tasks if t not in SENSING_TASKS]
        if unknown or not tasks:
            raise DataConfigError(
                f"tasks must list some of {', '.join(SENSING_TASKS)}; got {tasks}", key=("tasks",)
            )
        for key, value, least in (
            ("num_samples", num_samples, 1),
            ("seq_len", seq_len, 8),
            ("num_subcarriers", num_subcarriers, 1),
            ("num_people", num_people, 2),
        ):
            if value < least:
                raise DataConfigError(f"{key} must be at least {least}, got {value}", key=(key,))
        if sample_rate <= 0 or noise < 0:
            raise DataConfigError(
                f"sample_rate must be positive and noise non-negative, got {sample_rate}, {noise}",
                key=("sample_rate" if sample_rate <= 0 else "noise",),
            )
        self.task_list = list(dict.fromkeys(tasks))
        self.num_samples, self.seq_len, self.num_subcarriers = num_samples, seq_len, num_subcarriers
        self.num_people, self.sample_rate, self.noise = num_people, sample_rate, noise
        self.people_seed, self.remove_static = people_seed, remove_static
        self.standardize = standardize

    @property
    def tasks(self) -> list[str]:
        return self.task_list

    def load(self) -> TaskTensorDataset:
        people_rng = np.random.default_rng([self.people_seed, 7])
        people = [_Person(people_rng) for _ in range(self.num_people)]
        rng = np.random.default_rng([self.seed, 11])
        recorder = _Recorder(self.seq_len, self.num_subcarriers, self.sample_rate, self.noise)
        n = self.num_samples
        with_source = "motion_source" in self.task_list
        source = rng.integers(len(SOURCES), size=n) if with_source else np.ones(n, dtype=np.int64)
        activity = rng.integers(len(ACTIVITIES), size=n)
        person = rng.integers(self.num_people, size=n)
        inputs = np.empty((n, self.seq_len, self.num_subcarriers), dtype=np.float32)
        for i in range(n):
            static = recorder.static(rng)
            if SOURCES[source[i]] == "human":
                dynamic, level = recorder.human(ACTIVITIES[activity[i]], people[person[i]], rng)
            else:
                dynamic, level = recorder.other(SOURCES[source[i]], rng), np.ones((1, 1))
            inputs[i] = recorder.record(static, dynamic, level, rng)
        if self.remove_static:
            inputs -= inputs.mean(axis=1, keepdims=True)
        human = source == SOURCES.index("human")
        labels = {
            "motion_source": source,
            "activity": np.where(human, activity, -100),
            "identity": np.where(human, person, -100),
        }
        targets = {t: torch.from_numpy(labels[t].astype(np.int64)) for t in self.task_list}
        return TaskTensorDataset(torch.from_numpy(inputs), targets)

    def fit_transform(self, train: TaskTensorDataset, others: list[TaskTensorDataset]) -> None:
        if self.standardize:
            standardize_(train.inputs, [o.inputs for o in others], dim=(0, 1))
