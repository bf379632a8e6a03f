"""The actions suite's components, each on its own: temporal conv net, frame-wise tasks
(masked per-frame regression, segment F1@k), focal loss, class weights from the training
split, the generated action sequences; then a smoke run from the suite's maker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from runtime.class_weights import fit_to_training_labels, frequency_weights, training_labels
from runtime.cli import main, run_command
from runtime.data import ActionSegmentsDataModule, DataConfigError, MultiDatasetDataModule
from runtime.frame_tasks import FrameClassificationTask, FrameRegressionTask
from runtime.losses import classification_loss
from runtime.segment_metrics import FrameClassificationMetrics, segment_counts, segments
from runtime.temporal import TemporalConvNet

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- temporal conv net
@pytest.mark.parametrize("causal", [False, True])
def test_temporal_net_keeps_length_and_sees_exactly_its_receptive_field(causal):
    torch.manual_seed(0)
    net = TemporalConvNet(5, channels=8, dilations=[1, 2, 4], kernel_size=3, causal=causal)
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4) == 15
    x = torch.randn(2, 40, 5)
    out = net(x)
    assert out.shape == (2, 40, 8)
    # move one input frame: exactly the frames within the receptive field change
    t0 = 20
    bumped = x.clone()
    bumped[:, t0] += 1.0
    changed = (net(bumped) - out).abs().amax(dim=(0, 2)) > 1e-6
    frames = torch.nonzero(changed).flatten().tolist()
    if causal:
        assert frames == list(range(t0, t0 + 15))  # only the present and the future see it
    else:
        assert frames == list(range(t0 - 7, t0 + 8))
    assert len(frames) == net.receptive_field


@pytest.mark.parametrize(
    "kwargs",
    [{"dilations": []}, {"dilations": [1, 0]}, {"kernel_size": 4}, {"dropout": 1.0}],
)
def test_temporal_net_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError, match="TemporalConvNet"):
        TemporalConvNet(4, **kwargs)


# ---------------------------------------------------------------- masked per-frame regression
def test_frame_regression_loss_and_metrics_skip_missing_entries_exactly():
    task = FrameRegressionTask(num_outputs=2, loss="mse")
    # outputs [B=1, D=2, T=3]; targets time-first [1, 3, 2], NaN = missing
    outputs = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]], requires_grad=True)
    nan = float("nan")
    target = torch.tensor([[[0.0, 1.0], [nan, nan], [1.0, nan]]])
    # present: (d0,t0) 1 vs 0, (d1,t0) 0 vs 1, (d0,t2) 3 vs 1 -> (1 + 1 + 4) / 3
    loss = task.loss(outputs, target)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    grad = outputs.grad[0]
    assert grad[:, 1].abs().sum() == 0
    assert grad[1, 2] == 0
    # a masked entry's output can be anything
    moved = outputs.detach().clone()
    moved[0, 1, 2] = 1e6
    assert task.loss(moved, target).item() == pytest.approx(2.0)
    metric = task.make_metrics()
    metric.update(outputs.detach(), target)
    values = metric.compute()
    assert values["mae"].item() == pytest.approx(4 / 3)
    assert values["rmse"].item() == pytest.approx(math.sqrt(2.0))
    assert task.predict(outputs)["value"].shape == (1, 3, 2)  # time-first like the targets


def test_frame_regression_all_missing_gives_zero_loss_and_no_metrics():
    task = FrameRegressionTask(num_outputs=1)
    target = torch.full((2, 4), float("nan"))  # [B, T] for one output
    assert task.loss(torch.zeros(2, 1, 4), target).item() == 0.0
    metric = task.make_metrics()
    metric.update(torch.zeros(2, 1, 4), target)
    assert metric.compute() == {}


def test_frame_regression_target_spec_checks_per_frame_shape():
    from runtime.data.validate import Source, validated

    spec = {"kp": FrameRegressionTask(num_outputs=3).target_spec()}
    good = {"kp": torch.zeros(4, 5, 3)}
    assert validated(torch.zeros(4, 5, 2), good, spec, Source("t"))["kp"].shape == (4, 5, 3)
    with pytest.raises(DataConfigError, match=r"per frame \(\[N, T, 3\]\)"):
        validated(torch.zeros(4, 5, 2), {"kp": torch.zeros(4, 3)}, spec, Source("t"))


# ---------------------------------------------------------------- segment F1@k
def test_segments_are_runs_of_equal_labels():
    label, start, end = segments(np.array([0, 0, 1, 1, 1, 2, 0]))
    assert label.tolist() == [0, 1, 2, 0]
    assert start.tolist() == [0, 2, 5, 6]
    assert end.tolist() == [2, 5, 6, 7]
    assert len(segments(np.array([], dtype=np.int64))[0]) == 0


def test_segment_counts_hand_cases():
    true = np.array([0] * 10 + [1] * 10)
    # perfect prediction: every segment matched at every overlap
    assert segment_counts(true, true, [0.1, 0.5, 1.0]).tolist() == [[2, 0, 0]] * 3
    # shifted boundary: class 0 IoU 6/10, class 1 IoU 10/14
    pred = np.array([0] * 6 + [1] * 14)
    assert segment_counts(pred, true, [0.5, 0.65, 0.75]).tolist() == [
        [2, 0, 0],
        [1, 1, 1],
        [0, 2, 2],
    ]
    # over-segmentation: a 2-frame flicker of class 1 inside class 0
    flicker = true.copy()
    flicker[4:6] = 1
    # segments 0[0,4) 1[4,6) 0[6,10) 1[10,20): IoUs 0.4, 0.2, 0.4, 1.0 -> the second
    # class-0 piece finds its best match already taken
    assert segment_counts(flicker, true, [0.1]).tolist() == [[2, 2, 0]]
    assert segment_counts(flicker, true, [0.5]).tolist() == [[1, 3, 1]]
    # background segments are scored on neither side
    assert segment_counts(flicker, true, [0.1], background=[0]).tolist() == [[1, 1, 0]]
    # nothing predicted for a class: its true segment is a false negative
    assert segment_counts(np.zeros(20, dtype=np.int64), true, [0.1]).tolist() == [[1, 0, 1]]


def test_frame_metrics_segment_f1_drop_ignored_frames_and_forward_kwargs():
    metric = FrameClassificationMetrics(["a", "b"], [0.5], dist_sync_on_step=True)
    assert metric.dist_sync_on_step  # torchmetrics options pass through
    target = torch.tensor([[0, 0, 0, 1, 1, 1, -100, -100]])
    pred = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0]])
    logits = F.one_hot(pred, 2).movedim(-1, 1).float()
    metric.update(logits, target)
    values = metric.compute()
    # the two padded frames are dropped: segments 0[0,2) vs 0[0,3) IoU 2/3, 1[2,6) vs
    # 1[3,6) IoU 3/4 -> both matched at 0.5
    assert values["seg_f1_50"].item() == pytest.approx(1.0)
    assert values["accuracy"].item() == pytest.approx(5 / 6)
    task = FrameClassificationTask(class_names=["a", "b"], segment_overlaps=[0.1, 0.25])
    assert task.segment_overlaps == [0.1, 0.25, 0.5]  # F1@50 always: mtl-compare uses it


def test_frame_task_refuses_unknown_primary_metric_and_background():
    with pytest.raises(ValueError, match="primary_metric must be one of"):
        FrameClassificationTask(num_classes=3, primary_metric="seg_f1_75")
    with pytest.raises(ValueError, match="background_classes"):
        FrameClassificationTask(class_names=["a", "b"], background_classes=["c"])


# ---------------------------------------------------------------- focal loss
def test_focal_loss_hand_value_and_gamma_zero_is_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = [0.25, 0.75]
    target = torch.tensor([1])
    focal = classification_loss(logits, target, focal_gamma=2.0)
    assert focal.item() == pytest.approx(0.25**2 * -math.log(0.75))
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 5)  # frame-wise [B, C, T]
    target = torch.randint(0, 4, (6, 5))
    target[0, :2] = -100
    ce = F.cross_entropy(logits, target, ignore_index=-100)
    assert classification_loss(logits, target, focal_gamma=0.0).item() == pytest.approx(ce.item())


# ---------------------------------------------------------------- class-frequency weights
def test_frequency_weights_hand_values():
    labels = torch.tensor([[0, 0, 0, 1], [0, 0, 1, -100]])  # counts 5, 2, 0 (missing skipped)
    balanced = frequency_weights(labels, 3, "balanced")
    # n / (C * n_c), then scaled so the mean weight over the 7 labels is 1
    raw = torch.tensor([1 / 5, 1 / 2, 1.0])
    expected = raw * 7 / (5 * raw[0] + 2 * raw[1])
    assert torch.allclose(balanced, expected)
    assert (balanced * torch.tensor([5.0, 2.0, 0.0])).sum().item() == pytest.approx(7.0)
    sqrt = frequency_weights(labels, 3, "sqrt_balanced")
    assert sqrt[1] / sqrt[0] == pytest.approx(math.sqrt(5 / 2))


def test_class_weights_come_from_the_training_split_only():
    module = ActionSegmentsDataModule(num_sequences=30, seq_len=32, seed=3)
    data = MultiDatasetDataModule(data_modules={"acts": module}, batch_sizes={"acts": 4})
    data.setup("fit")
    task = FrameClassificationTask(num_classes=8, class_weights="balanced")
    assert task.class_weights is None
    assert task.needs_training_labels()
    fit_to_training_labels({"actions": task}, data)
    train = module.train_dataset.targets["actions"]
    assert torch.equal(training_labels(data, "actions")[0], train)
    assert torch.allclose(task.class_weights, frequency_weights(train, 8, "balanced"))
    everything = torch.cat(
        [train, module.val_dataset.targets["actions"], module.test_dataset.targets["actions"]]
    )
    assert not torch.allclose(task.class_weights, frequency_weights(everything, 8, "balanced"))
    rare, common = task.class_weights.argmax(), task.class_weights.argmin()
    assert (train == rare).sum() < (train == common).sum()  # rarer classes weigh more
    fixed = FrameClassificationTask(num_classes=8, class_weights=[1.0] * 8)
    assert not fixed.needs_training_labels()


# ---------------------------------------------------------------- generated action sequences
def test_action_sequences_are_seeded_and_shaped_and_mask_keypoints():
    a = ActionSegmentsDataModule(num_sequences=20, seq_len=50, num_keypoints=4, seed=1)
    b = ActionSegmentsDataModule(num_sequences=20, seq_len=50, num_keypoints=4, seed=1)
    alone = ActionSegmentsDataModule(
        num_sequences=20, seq_len=50, num_keypoints=4, seed=1, keypoint_task=None
    )
    x, y = a.load(), b.load()
    assert torch.equal(x.inputs, y.inputs)
    assert x.inputs.shape == (20, 50, 32)
    assert x.targets["actions"].shape == (20, 50)
    assert x.targets["keypoints"].shape == (20, 50, 8)
    kp = x.targets["keypoints"]
    assert torch.equal(torch.isnan(kp), torch.isnan(y.targets["keypoints"]))
    assert 0.1 < torch.isnan(kp).float().mean() < 0.2
    assert torch.equal(torch.isnan(kp[..., 0::2]), torch.isnan(kp[..., 1::2]))  # x, y together
    single = alone.load()  # the single-task baseline sees the very same sequences
    assert alone.tasks == ["actions"]
    assert torch.equal(single.inputs, x.inputs)
    assert torch.equal(single.targets["actions"], x.targets["actions"])
    counts = torch.bincount(x.targets["actions"].reshape(-1), minlength=8)
    assert counts[-1] < counts[0]  # the last classes are the rare ones


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_classes": 3, "class_frequencies": [1.0, 2.0]}, "class_frequencies"),
        ({"class_frequencies": [1.0, -1.0]}, "class_frequencies"),
        ({"segment_length": [5, 2]}, "segment_length"),
        ({"missing_keypoints": 1.0}, "missing_keypoints"),
        ({"keypoint_task": "actions"}, "keypoint_task"),
    ],
)
def test_action_sequences_refuse_bad_settings(kwargs, key):
    with pytest.raises(DataConfigError) as info:
        ActionSegmentsDataModule(**kwargs)
    assert info.value.key == (key,)


# ---------------------------------------------------------------- the suite end to end
def _compile(tmp_path: Path, maker: str, *sets: str) -> Path:
    from compiler.cli import main as make

    out = tmp_path / f"{Path(maker).stem}.run.yaml"
    args = [str(REPO / maker), "-o", str(out), "-q"]
    for item in sets:
        args += ["--set", item]
    with pytest.raises(SystemExit) as info:
        make(args)
    assert info.value.code == 0
    return out


SMOKE = ("sequences=24", "epochs=2", "channels=16")


@pytest.mark.slow
def test_actions_suite_smoke_run_from_the_maker(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _compile(tmp_path, "maker_configs/actions.yaml", *SMOKE)
    cli = run_command(["fit", str(config), "--trainer.accelerator=cpu"])
    # the run weighted its focal loss by the training split's class frequencies
    train = cli.datamodule.data_modules["actions"].train_dataset.targets["actions"]
    weights = cli.model.tasks["actions"].class_weights
    assert torch.allclose(weights.cpu(), frequency_weights(train, 8, "sqrt_balanced"))
    summary = json.loads((tmp_path / "runs/actions/summary.json").read_text())
    assert {"accuracy", "macro_f1", "f1_fall", "seg_f1_10", "seg_f1_25", "seg_f1_50"} <= set(
        summary["actions"]
    )
    assert {"mae", "rmse"} <= set(summary["keypoints"])
    assert all(v is not None for v in summary["keypoints"].values())
    # the checkpoint (with the early-stopping state in it) loads safely for evaluation
    assert main(["test", str(config), "--trainer.accelerator=cpu"]) == 0, capsys.readouterr().err


def test_bad_temporal_setting_in_the_suite_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _compile(tmp_path, "maker_configs/actions.yaml", *SMOKE)
    doc = yaml.safe_load(config.read_text())
    encoder = doc["model"]["init_args"]["model"]["init_args"]["encoder"][0]
    encoder["init_args"]["dilations"] = [1, 0]

    def refused(key: str) -> None:
        config.write_text(yaml.safe_dump(doc))
        code = main(["fit", "--check", str(config)])
        err = capsys.readouterr().err
        assert code == 2
        assert key in err
        assert "Traceback" not in err

    refused("dilations")
    assert not (tmp_path / "runs").exists()
    tasks = doc["model"]["init_args"]["tasks"]
    encoder["init_args"]["dilations"] = [1, 2]
    tasks["actions"]["init_args"]["class_weights"] = "inverse"
    refused("class_weights")
