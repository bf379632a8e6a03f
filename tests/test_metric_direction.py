"""Which way a metric is better is declared once, by the metric class's ``higher_is_better``
(torchmetrics' attribute): tasks, ``val/score``, per-task checkpoints and the metric record in
summary.json all follow it; task metrics may be a ``MetricCollection``; metric classes forward
torchmetrics' keyword arguments. CPU only."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric, MetricCollection

from runtime import tasks as task_module
from runtime.cli import task_checkpoints
from runtime.metric_record import MetricRecord
from runtime.metrics import (
    ConfusionMatrixMetrics,
    MultiLabelMetrics,
    RegressionMetrics,
    higher_is_better,
)
from runtime.model import MultiTaskModel
from runtime.module import MultiTaskModule
from runtime.tasks import (
    ClassificationTask,
    MultiLabelTask,
    PerPositionClassificationTask,
    RegressionTask,
    Task,
)


def test_tasks_declare_no_direction_of_their_own():
    for cls in (Task, *Task.__subclasses__(), PerPositionClassificationTask):
        assert not hasattr(cls, "lower_is_better"), cls
        assert not hasattr(cls, "higher_is_better_metrics"), cls
    builtin = [c for c in vars(task_module).values() if isinstance(c, type)]
    for cls in builtin:
        if issubclass(cls, Task) and cls is not Task:
            assert "higher_is_better" not in vars(cls), cls  # only the base asks the metric


@pytest.mark.parametrize(
    ("task", "record"),
    [
        (ClassificationTask(num_classes=2), ("accuracy", ("accuracy", "macro_f1"), True)),
        (
            ClassificationTask(num_classes=2, primary_metric="macro_f1"),
            ("macro_f1", ("accuracy", "macro_f1"), True),
        ),
        (
            PerPositionClassificationTask(num_classes=2),
            ("accuracy", ("accuracy", "macro_f1"), True),
        ),
        (MultiLabelTask(num_labels=2), ("macro_f1", ("macro_f1",), True)),
        (RegressionTask(), ("mae", ("mae", "rmse"), False)),
        (RegressionTask(primary_metric="rmse"), ("rmse", ("mae", "rmse"), False)),
    ],
)
def test_builtin_records_follow_their_metric_classes(task: Task, record):
    primary, compared, higher = record
    got = task.metric_record()
    assert (got.primary_metric, got.metrics) == (primary, compared)
    assert set(got.higher_is_better.values()) == {higher}
    assert higher == type(task.make_metrics()).higher_is_better  # the one declaration
    value = torch.tensor(0.25)
    assert task.score({primary: value}) == (value if higher else -value)
    assert MetricRecord.from_entry(got.to_json(), None, "t") == got  # JSON round trip


class LowerError(MeanMetric):
    """A lower-is-better metric (``compute`` gives a dict, as task metrics do)."""

    higher_is_better = False

    def compute(self) -> dict[str, Tensor]:
        return {"error": super().compute()}


class ErrorTask(ClassificationTask):
    """A classification task scored on an error rate: its direction comes with its metric."""

    comparison_metrics = ("error",)

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__(num_classes=num_classes)
        self.primary_metric = "error"

    def make_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "confusion": ConfusionMatrixMetrics(self.class_names),
                "error": _ErrorOfLogits(),
            }
        )


class _ErrorOfLogits(LowerError):
    def update(self, logits: Tensor, target: Tensor) -> None:  # type: ignore[override]
        super().update((logits.argmax(1) != target).float())


def _module(task: Task) -> MultiTaskModule:
    model = MultiTaskModel(encoder=[nn.Identity()], decoders={"t": [nn.Linear(2, 2)]})
    return MultiTaskModule(model, {"t": task})


def test_a_metric_class_flips_score_checkpoint_mode_and_record_together():
    task = ErrorTask()
    assert task.higher_is_better("error") is False
    assert task.score({"error": torch.tensor(0.2)}) == pytest.approx(-0.2)
    assert task.metric_record().to_json() == {
        "primary_metric": "error",
        "comparison_metrics": ["error"],
        "higher_is_better": {"error": False},
    }
    [checkpoint] = task_checkpoints(_module(task), "/tmp/unused")
    assert (checkpoint.monitor, checkpoint.mode) == ("val/t/error", "min")
    [default] = task_checkpoints(_module(ClassificationTask(num_classes=2)), "/tmp/unused")
    assert default.mode == "max"


def test_a_metric_collection_logs_every_member_and_keeps_the_confusion_matrix():
    module = _module(ErrorTask())
    logged: dict[str, Tensor] = {}
    module.log_dict = lambda values, **_: logged.update(values)  # type: ignore[method-assign]
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    module.metrics["val"]["t"].update(logits, torch.tensor([0, 1, 1, 1]))
    module._log_epoch_metrics("val")
    assert logged["val/t/error"] == pytest.approx(0.5)
    assert logged["val/t/accuracy"] == pytest.approx(0.5)
    assert logged["val/score"] == pytest.approx(-0.5)  # the error, negated
    assert module.confusion_matrices["val"]["t"].tolist() == [[1, 0], [2, 1]]
    logged.clear()
    module._log_epoch_metrics("val")  # reset, then no batch: nothing logged
    assert logged == {}


class Undeclared(Metric):
    def __init__(self) -> None:
        super().__init__()
        self.add_state("n", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, *args: object) -> None:
        self.n += 1

    def compute(self) -> dict[str, Tensor]:
        return {"n": self.n}


class UndeclaredTask(ClassificationTask):
    def __init__(self) -> None:
        super().__init__(num_classes=2)
        self.primary_metric = "n"

    def make_metrics(self) -> Metric:
        return Undeclared()


def test_a_metric_without_a_direction_is_refused_when_the_module_is_built():
    with pytest.raises(ValueError, match=r"tasks\.t: Undeclared does not say which way"):
        _module(UndeclaredTask())


def test_mixed_directions_in_a_collection_need_the_member_name():
    mixed = MetricCollection({"confusion": ConfusionMatrixMetrics(["a", "b"]), "e": LowerError()})
    assert higher_is_better(mixed, "e") is False
    assert higher_is_better(mixed, "confusion") is True
    with pytest.raises(ValueError, match="different ways"):
        higher_is_better(mixed, "macro_f1")
    same = MetricCollection([ConfusionMatrixMetrics(["a", "b"]), MultiLabelMetrics(["x"])])
    assert higher_is_better(same, "macro_f1") is True


@pytest.mark.parametrize(
    "metric",
    [
        lambda **kw: ConfusionMatrixMetrics(["a", "b"], **kw),
        lambda **kw: MultiLabelMetrics(["a"], **kw),
        lambda **kw: RegressionMetrics(**kw),
    ],
)
def test_metric_classes_forward_torchmetrics_keyword_arguments(metric):
    built = metric(sync_on_compute=False, compute_with_cache=False)
    assert built.sync_on_compute is False
    assert built.compute_with_cache is False
    with pytest.raises(ValueError, match="compute_on_cpu"):
        metric(compute_on_cpu="yes")  # torchmetrics checks them: really forwarded
