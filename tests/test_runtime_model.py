"""Model side of the runtime: merged heads, lazy decoding, losses, metrics, EMA, schedules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from runtime.encoders import CNNEncoder, MLPEncoder, TransformerEncoder
from runtime.heads import ClassificationHead, PerPositionClassificationHead
from runtime.losses import classification_loss, multilabel_loss, regression_loss
from runtime.metrics import ConfusionMatrixMetrics, MultiLabelMetrics, RegressionMetrics
from runtime.model import MultiTaskModel
from runtime.module import MultiTaskModule
from runtime.schedulers import WarmupCosine
from runtime.tasks import ClassificationTask, PerPositionClassificationTask, RegressionTask


class CountingHead(nn.Linear):
    """A head that counts its calls (lazy decoding)."""

    def __init__(self, in_features: int, num_outputs: int) -> None:
        super().__init__(in_features, num_outputs)
        self.num_outputs = num_outputs
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def merged_model() -> MultiTaskModel:
    return MultiTaskModel(
        encoder=[nn.Identity()],
        decoders={"merged": [CountingHead(4, 5)], "solo": [CountingHead(4, 2)]},
        decoder_to_target={"merged": ["a", "b"], "solo": ["c"]},
        task_label_offsets={
            "a": {"offset": 0, "num_outputs": 3},
            "b": {"offset": 3, "num_outputs": 2},
        },
    )


def test_merged_head_outputs_are_views_of_each_tasks_block():
    model = merged_model()
    x = torch.randn(6, 4)
    out = model(x, ["a", "b"])
    full = model.decoders["merged"](x)
    torch.testing.assert_close(out["a"], full[:, 0:3])
    torch.testing.assert_close(out["b"], full[:, 3:5])
    assert out["a"].data_ptr() == out["b"].data_ptr() - 3 * out["a"].element_size()  # a view
    assert model.decoders["merged"][-1].calls == 2  # one decode serves both tasks (+1 above)


def test_merged_head_probabilities_renormalise_over_the_tasks_own_labels():
    model = merged_model()
    task = ClassificationTask(class_names=["p", "q"])
    out = model(torch.randn(4, 4), ["b"])["b"]
    probs = task.predict(out)["probs"]
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    target = torch.tensor([0, 1, 1, 0])  # local class indices
    torch.testing.assert_close(task.loss(out, target), F.cross_entropy(out, target))


def test_lazy_decoding_runs_only_the_batch_tasks_decoders():
    model = merged_model()
    out = model(torch.randn(3, 4), ["c"])
    assert set(out) == {"c"}
    assert model.decoders["merged"][-1].calls == 0
    assert model.decoders["solo"][-1].calls == 1
    model.lazy_decode = False
    assert set(model(torch.randn(3, 4), ["c"])) == {"a", "b", "c"}


def test_per_task_metrics_use_local_labels_of_a_merged_head():
    model = merged_model()
    module = MultiTaskModule(
        model,
        {
            "a": ClassificationTask(num_classes=3),
            "b": ClassificationTask(num_classes=2),
            "c": ClassificationTask(num_classes=2),
        },
    )
    batch = {
        "dataset": "d",
        "inputs": torch.randn(8, 4),
        "targets": {"b": torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])},
    }
    module._step(batch, "val")
    metric = module.metrics["val"]["b"]
    assert metric.confusion_matrix.shape == (2, 2)
    assert int(metric.confusion_matrix.sum()) == 8
    assert module.metrics["val"]["a"].update_count == 0


def test_module_rejects_task_head_width_mismatch():
    model = merged_model()
    with pytest.raises(ValueError, match=r"tasks\.b.*2 outputs.*3"):
        MultiTaskModule(
            model,
            {
                "a": ClassificationTask(num_classes=3),
                "b": ClassificationTask(num_classes=3),
                "c": ClassificationTask(num_classes=2),
            },
        )
    with pytest.raises(ValueError, match=r"missing definitions for \['c'\]"):
        MultiTaskModule(
            model, {"a": ClassificationTask(num_classes=3), "b": ClassificationTask(num_classes=2)}
        )


def test_cross_entropy_masks_missing_labels_with_smoothing_and_class_weights():
    logits = torch.randn(10, 4)
    target = torch.tensor([0, 1, -100, 3, 2, -100, 1, 0, 3, 2])
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5])
    ours = classification_loss(logits, target, label_smoothing=0.1, class_weights=weights)
    ref = F.cross_entropy(logits, target, weight=weights, label_smoothing=0.0, ignore_index=-100)
    plain = classification_loss(logits, target, class_weights=weights)
    torch.testing.assert_close(plain, ref)
    assert not torch.isclose(ours, plain)
    keep = target != -100
    torch.testing.assert_close(
        classification_loss(logits, target), F.cross_entropy(logits[keep], target[keep])
    )


def test_all_missing_labels_give_zero_loss_not_nan():
    loss = classification_loss(torch.randn(3, 2), torch.full((3,), -100))
    assert loss.item() == 0.0
    assert regression_loss(torch.randn(3, 1), torch.full((3,), math.nan), kind="mse").item() == 0


def test_focal_loss_downweights_easy_examples():
    target = torch.tensor([0, 0])
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])  # easy, hard
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = torch.stack(
        [
            classification_loss(logits[i : i + 1], target[i : i + 1], focal_gamma=2.0)
            for i in range(2)
        ]
    )
    assert (focal < ce).all()
    assert focal[0] / ce[0] < focal[1] / ce[1]
    assert classification_loss(logits, target, focal_gamma=0.0) == pytest.approx(ce.mean().item())


def test_multilabel_bce_masks_entries():
    logits = torch.randn(4, 3)
    target = torch.tensor([[1, 0, -100], [0, 1, 1], [-100, -100, 0], [1, 1, 0]]).float()
    keep = target != -100
    ref = F.binary_cross_entropy_with_logits(logits[keep], target[keep])
    torch.testing.assert_close(multilabel_loss(logits, target), ref)


@pytest.mark.parametrize(
    ("kind", "fn"), [("mse", F.mse_loss), ("l1", F.l1_loss), ("huber", F.huber_loss)]
)
def test_regression_losses_mask_nan_targets(kind, fn):
    preds = torch.randn(6, 1)
    target = torch.tensor([0.5, math.nan, 1.0, -2.0, math.nan, 3.0])
    keep = ~torch.isnan(target)
    ref = fn(preds[keep, 0], target[keep])
    torch.testing.assert_close(regression_loss(preds, target, kind=kind), ref)


def test_confusion_metrics_match_sklearn_and_ignore_missing():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g)
    target = torch.randint(0, 4, (50,), generator=g)
    target[::7] = -100
    metric = ConfusionMatrixMetrics(["a", "b", "c", "d"])
    metric.update(logits[:25], target[:25])
    metric.update(logits[25:], target[25:])
    values = metric.compute()
    keep = target != -100
    y, p = target[keep].numpy(), logits.argmax(1)[keep].numpy()
    assert values["accuracy"].item() == pytest.approx(accuracy_score(y, p))
    assert values["macro_f1"].item() == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
    per_class = f1_score(y, p, average=None, labels=[0, 1, 2, 3])
    assert values["f1_c"].item() == pytest.approx(per_class[2], abs=1e-6)


def test_per_position_task_counts_every_position():
    task = PerPositionClassificationTask(num_classes=3)
    head = PerPositionClassificationHead(in_features=5, num_outputs=3)
    frames = head(torch.randn(2, 7, 5))
    assert frames.shape == (2, 3, 7)
    target = torch.randint(0, 3, (2, 7))
    target[0, :2] = -100
    metric = task.make_metrics()
    metric.update(frames, target)
    assert int(metric.confusion_matrix.sum()) == 12
    assert head(torch.randn(2, 5, 4, 4)).shape == (2, 3, 4, 4)
    assert torch.isfinite(task.loss(frames, target))


def test_multilabel_and_regression_metrics():
    ml = MultiLabelMetrics(["x", "y"])
    ml.update(torch.tensor([[5.0, -5.0], [5.0, 5.0]]), torch.tensor([[1.0, 0.0], [-100, 0.0]]))
    values = ml.compute()
    assert values["accuracy"].item() == pytest.approx(2 / 3)
    reg = RegressionMetrics()
    reg.update(torch.tensor([[1.0], [2.0], [0.0]]), torch.tensor([2.0, math.nan, 3.0]))
    values = reg.compute()
    assert values["mae"].item() == pytest.approx(2.0)
    assert values["rmse"].item() == pytest.approx(math.sqrt(5.0))
    assert RegressionTask().score(values).item() == pytest.approx(-2.0)


def test_encoders_shapes():
    assert MLPEncoder(6, [8, 4])(torch.randn(3, 6)).shape == (3, 4)
    seq = TransformerEncoder(6, d_model=16, num_layers=1, num_heads=2)
    assert seq(torch.randn(2, 5, 6)).shape == (2, 16)
    patches = TransformerEncoder(
        3 * 4 * 4, d_model=16, num_layers=1, num_heads=2, patch_size=4, pool="none"
    )
    assert patches(torch.randn(2, 3, 8, 8)).shape == (2, 4, 16)
    assert CNNEncoder(1, [4, 8])(torch.randn(2, 1, 8, 8)).shape == (2, 8)
    assert ClassificationHead(16, 3)(torch.randn(2, 5, 16)).shape == (2, 3)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
