"""The generated sensing dataset (runtime.data.sensing): seeded, shaped, labelled, learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.data import DataConfigError, SensingDataModule
from runtime.data.sensing import ACTIVITIES, SOURCES

SMALL = {"num_samples": 90, "seq_len": 40, "num_subcarriers": 12}


def loaded(**kwargs) -> SensingDataModule:
    dm = SensingDataModule(**{**SMALL, **kwargs})
    dm.setup("fit")
    return dm


def test_same_seed_same_recordings_other_seed_others() -> None:
    a, b = loaded(seed=3), loaded(seed=3)
    torch.testing.assert_close(a.train_dataset.inputs, b.train_dataset.inputs)
    for task in a.tasks:
        assert torch.equal(a.train_dataset.targets[task], b.train_dataset.targets[task])
    assert not torch.allclose(loaded(seed=4).train_dataset.inputs, a.train_dataset.inputs)


def test_shapes_label_ranges_and_missing_labels_of_non_human_sources() -> None:
    dm = loaded(num_people=4)
    assert dm.tasks == ["motion_source", "activity", "identity"]
    splits = [dm.train_dataset, dm.val_dataset, dm.test_dataset]
    assert sum(len(s) for s in splits) == SMALL["num_samples"]
    data = dm.train_dataset
    assert data.inputs.shape[1:] == (40, 12)
    assert data.inputs.dtype == torch.float32
    assert torch.isfinite(data.inputs).all()
    source, activity, identity = (data.targets[t] for t in dm.tasks)
    assert set(source.tolist()) <= set(range(len(SOURCES)))
    human = source == SOURCES.index("human")
    assert (activity[~human] == -100).all()
    assert (identity[~human] == -100).all()
    assert activity[human].min() >= 0
    assert activity[human].max() < len(ACTIVITIES)
    assert identity[human].min() >= 0
    assert identity[human].max() < 4
    # standardized per subcarrier with the training split's statistics
    torch.testing.assert_close(data.inputs.mean(dim=(0, 1)), torch.zeros(12), atol=1e-4, rtol=0)


def test_without_motion_source_every_recording_is_of_a_person() -> None:
    dm = loaded(tasks=["identity"])
    assert dm.tasks == ["identity"]
    assert (dm.train_dataset.targets["identity"] >= 0).all()


def _spectra(x: torch.Tensor) -> np.ndarray:
    """Per recording: its time spectrum (averaged over subcarriers) and subcarrier spread."""
    x = x.numpy()
    spec = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)).mean(axis=2)
    return np.concatenate([spec, x.std(axis=1)], axis=1)


@pytest.mark.parametrize("task", ["motion_source", "activity", "identity"])
def test_labels_are_learnable_from_the_signal(task: str) -> None:
    """A linear classifier on plain spectra beats chance clearly on held-out recordings."""
    from sklearn.linear_model import LogisticRegression

    dm = loaded(tasks=[task], num_samples=300, seq_len=64, noise=0.5, num_people=4)
    train_x, train_y = _spectra(dm.train_dataset.inputs), dm.train_dataset.targets[task].numpy()
    val_x, val_y = _spectra(dm.val_dataset.inputs), dm.val_dataset.targets[task].numpy()
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    known, held = train_y >= 0, val_y >= 0
    classes = np.unique(train_y[known])
    fit = LogisticRegression(C=0.1, max_iter=300).fit(train_x[known], train_y[known])
    accuracy = fit.score(val_x[held], val_y[held])
    assert accuracy > 2.0 / len(classes), (task, accuracy)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"tasks": ["activty"]}, "tasks must list some of"),
        ({"tasks": []}, "tasks must list some of"),
        ({"seq_len": 4}, "seq_len must be at least 8"),
        ({"num_people": 1}, "num_people must be at least 2"),
        ({"noise": -1.0}, "noise non-negative"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, needle: str) -> None:
    with pytest.raises(DataConfigError, match=needle):
        SensingDataModule(**kwargs)
