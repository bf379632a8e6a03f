"""Self-supervised pieces on their own: augmentations, objectives, the data wrapper, NT-Xent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime import augment
from runtime.data.activity_sim import SimulatedActivityModule
from runtime.data.pretext import (
    AugmentationChoice,
    ContrastiveViews,
    FeatureStatistics,
    MaskedReconstruction,
)
from runtime.data.ssl import SelfSupervisedModule
from runtime.ssl_tasks import ContrastiveTask, MaskedReconstructionTask, RetrievalAccuracy, nt_xent

SEQUENCE_AUGMENTATIONS = [
    augment.Jitter(0.3),
    augment.Scaling(0.3),
    augment.TimeWarp(0.4, knots=3),
    augment.Permutation(3),
    augment.ChannelShuffle(),
]
IMAGE_AUGMENTATIONS = [augment.RandomCrop(2), augment.Flip(vertical=True), augment.Noise(0.2)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sequences(b: int = 6, t: int = 12, f: int = 4) -> torch.Tensor:
    return torch.randn(b, t, f, generator=gen(99))


@pytest.mark.parametrize(
    ("aug", "shape"),
    [(a, (6, 12, 4)) for a in SEQUENCE_AUGMENTATIONS]
    + [(a, (6, 2, 8, 8)) for a in IMAGE_AUGMENTATIONS]
    + [(a, (6, 8, 8)) for a in IMAGE_AUGMENTATIONS],
    ids=lambda v: v.name if isinstance(v, augment.Augmentation) else str(len(v)),
)
def test_augmentations_are_deterministic_under_a_seed(aug, shape):
    x = torch.randn(shape, generator=gen(1))
    first, again, other = aug(x, gen(5)), aug(x, gen(5)), aug(x, gen(6))
    assert first.shape == x.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, x)  # it did something
    assert torch.equal(x, torch.randn(shape, generator=gen(1)))  # input untouched


def test_sequence_augmentations_keep_what_they_should():
    x = sequences()
    permuted = augment.Permutation(3)(x, gen(0))
    channels = augment.ChannelShuffle()(x, gen(0))
    scaled = augment.Scaling(0.5)(x, gen(0))
    for i in range(len(x)):
        # the same time steps, reordered in whole segments of 4
        assert sorted(map(tuple, permuted[i].tolist())) == sorted(map(tuple, x[i].tolist()))
        blocks = {tuple(permuted[i, s : s + 4].flatten().tolist()) for s in (0, 4, 8)}
        assert blocks == {tuple(x[i, s : s + 4].flatten().tolist()) for s in (0, 4, 8)}
        # every channel kept whole
        assert {tuple(c) for c in channels[i].T.tolist()} == {tuple(c) for c in x[i].T.tolist()}
    factor = scaled / x
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-5)  # constant in time
    assert torch.allclose(augment.TimeWarp(0.0)(x, gen(0)), x, atol=1e-5)  # no warp: same
    warped = augment.TimeWarp(0.5)(x, gen(0))
    assert torch.allclose(warped[:, 0], x[:, 0])
    assert torch.allclose(warped[:, -1], x[:, -1])


def test_image_augmentations_shift_and_mirror():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(augment.RandomCrop(0)(x, gen(0)), x)
    cropped = augment.RandomCrop(1)(x, gen(3))
    for i in range(2):  # a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i, 0], (1, 1, 1, 1))
        windows = [padded[dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(cropped[i, 0], w) for w in windows)
    flipped = augment.Flip(p=1.0)(x, gen(0))
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(augment.Flip(p=0.0)(x, gen(0)), x)


def test_augmentations_refuse_the_wrong_shape():
    with pytest.raises(ValueError, match=r"sequences \[B, T, F\]"):
        augment.TimeWarp()(torch.zeros(2, 3, 4, 4), gen(0))
    with pytest.raises(ValueError, match="images"):
        augment.Flip()(torch.zeros(2, 3), gen(0))


def test_augmentation_classification_targets_name_the_transform_applied():
    x = sequences(b=32)
    objective = AugmentationChoice([augment.Identity(), augment.Flip(p=1.0)])
    inputs, target = objective.make(x, gen(4))
    assert target.dtype == torch.int64
    assert set(target.tolist()) == {0, 1}
    assert torch.equal(inputs[target == 0], x[target == 0])
    assert torch.equal(inputs[target == 1], x[target == 1].flip(-1))
    assert objective.class_names == ["Identity", "Flip"]


def test_masked_reconstruction_hides_whole_steps_and_scores_only_them():
    x = sequences(b=16, t=20)
    objective = MaskedReconstruction(mask_ratio=0.3, span=2, mask_value=0.0)
    inputs, target = objective.make(x, gen(0))
    hidden = ~torch.isnan(target)
    assert hidden.any(dim=(1, 2)).all()  # every sample has something to predict
    assert torch.equal(hidden, hidden[:, :, :1].expand_as(hidden))  # whole time steps
    assert torch.equal(target[hidden], x[hidden])
    assert (inputs[hidden] == 0).all()
    assert torch.equal(inputs[~hidden], x[~hidden])
    assert 0.1 < hidden.float().mean() < 0.5
    task = MaskedReconstructionTask(num_outputs=20 * 4)
    # perfect at the hidden positions, garbage at the visible ones: no loss
    outputs = torch.where(hidden, x, torch.full_like(x, 50.0)).reshape(16, -1)
    assert task.loss(outputs, target).item() == 0
    assert task.loss(outputs + hidden.reshape(16, -1) * 1.0, target).item() == pytest.approx(1.0)


def test_feature_statistics_match_numpy():
    x = sequences()
    stats = FeatureStatistics(["mean", "std", "min", "max", "abs_mean", "slope"])
    inputs, target = stats.make(x, gen(0))
    assert torch.equal(inputs, x)
    assert target.shape == (6, 6 * 4)
    a = x.numpy()
    steps = np.arange(12) - 5.5
    slope = (a * steps[None, :, None]).sum(1) / (steps**2).sum()
    expected = np.concatenate(
        [a.mean(1), a.std(1), a.min(1), a.max(1), np.abs(a).mean(1), slope], axis=1
    )
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="statistics"):
        FeatureStatistics(["median"])


def test_contrastive_views_pair_rows_i_and_i_plus_b():
    x = sequences(b=5)
    inputs, target = ContrastiveViews([augment.Jitter(0.5)]).make(x, gen(0))
    assert inputs.shape == (10, 12, 4)
    assert target.tolist() == [0, 1, 2, 3, 4] * 2
    assert not torch.equal(inputs[:5], inputs[5:])
    assert (inputs[:5] - x).abs().mean() > 0.2
    assert (inputs[5:] - x).abs().mean() > 0.2


def test_nt_xent_against_a_hand_computed_value():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [-1.0, 1.0]])
    pairs = torch.tensor([0, 1, 0, 1])
    t = 0.5
    unit = [[a / math.hypot(a, b), b / math.hypot(a, b)] for a, b in z.tolist()]
    total = 0.0
    for i in range(4):
        sims = {k: (unit[i][0] * unit[k][0] + unit[i][1] * unit[k][1]) / t for k in range(4)}
        positive = (i + 2) % 4
        denom = sum(math.exp(s) for k, s in sims.items() if k != i)
        total += -math.log(math.exp(sims[positive]) / denom)
    assert nt_xent(z, pairs, t).item() == pytest.approx(total / 4, rel=1e-5)
    task = ContrastiveTask(num_outputs=2, temperature=t)
    assert task.loss(z, pairs).item() == pytest.approx(total / 4, rel=1e-5)
    # rows with a missing id (-100) neither anchor nor count as positives
    masked = nt_xent(z, torch.tensor([0, -100, 0, -100]), t)
    assert torch.isfinite(masked)
    assert masked.item() > 0
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveTask(temperature=0)


def test_retrieval_accuracy_counts_partners_found():
    metric = RetrievalAccuracy()
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, -1.0]])
    metric.update(z, torch.tensor([0, 1, 0, 1]))  # rows 0 and 2 find each other; 1, 3 do not
    assert metric.compute()["accuracy"].item() == pytest.approx(0.5)


def base_module() -> SimulatedActivityModule:
    return SimulatedActivityModule(
        num_users=2, samples_per_user=30, length=16, targets={"act": "activity", "who": "user"}
    )


def test_wrapper_derives_targets_from_inputs_and_ignores_labels():
    module = SelfSupervisedModule(base_module(), FeatureStatistics(["mean"]), task="stats")
    module.setup("fit")
    assert module.tasks == ["stats"]
    base = module.base.train_dataset
    batch = module.train_dataset.get_batch(torch.tensor([3, 0, 7]))
    assert list(batch["targets"]) == ["stats"]  # the base's labels are not served
    assert torch.equal(batch["inputs"], base.inputs[[3, 0, 7]])
    assert torch.allclose(batch["targets"]["stats"], base.inputs[[3, 0, 7]].mean(1))
    assert len(module.val_dataset) == len(module.base.val_dataset)


def test_wrapper_views_depend_only_on_seed_split_and_sample_ids():
    def views(seed: int, split: str = "train", rows=(4, 1, 9)):
        module = SelfSupervisedModule(
            base_module(), ContrastiveViews([augment.Jitter()]), seed=seed
        )
        module.setup("fit")
        return module.dataset_for(split).get_batch(torch.tensor(rows))["inputs"]

    first = views(0)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first, views(0))
    assert not torch.equal(first, views(1))
    assert not torch.equal(first, views(0, "val"))
    assert not torch.equal(first[:3], views(0, rows=(4, 1, 8))[:3])  # another batch: new views


def test_activity_recordings_are_seeded_and_labelled():
    a, b = base_module(), base_module()
    x1, act, user = a.recordings()
    x2, _, _ = b.recordings()
    assert x1.shape == (60, 16, 6)
    assert np.array_equal(x1, x2)
    assert set(act) <= set(range(5))
    assert set(user) == {0, 1}
    c = SimulatedActivityModule(num_users=2, samples_per_user=30, length=16, seed=1)
    assert not np.array_equal(c.recordings()[0], x1)
