"""Training losses summed on the device and logged once per log interval and epoch; the same
epoch means after a mid-epoch resume; no host sync in a training step; a non-finite loss stops
the run (exit 3) or skips the update, and never reaches a checkpoint or summary.json."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from runtime_toy import ToyDataModule, toy_config
from torch.overrides import TorchFunctionMode

from compiler import exitcodes
from runtime.cli import main as mtl_run
from runtime.module import MultiTaskModule
from runtime.step_stats import NonFiniteLossError, StepStats

#: tensor methods that read a value back to the host (a sync on a GPU)
HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy"}


def _fit(tmp_path: Path, config: dict, *extra: str, name: str = "run") -> tuple[int, Path]:
    config["trainer"]["enable_progress_bar"] = False
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp_path / name
    return mtl_run([str(path), "--run-dir", str(run_dir), *extra]), run_dir


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _epoch_rows(run_dir: Path) -> dict[int, dict[str, float]]:
    return {
        int(r["epoch"]): {k: float(v) for k, v in r.items() if v and k.startswith("train/")}
        for r in _rows(run_dir)
        if r.get("train/loss_epoch")
    }


# ---- StepStats on its own -------------------------------------------------------------------
def _steps() -> list[tuple[dict[str, float], float, int]]:
    """(per-task losses, total, batch size) of six steps over tasks a, b."""
    return [
        ({"a": 1.0}, 1.0, 4),
        ({"b": 2.0}, 2.0, 2),
        ({"a": 3.0, "b": 5.0}, 8.0, 3),
        ({"a": 0.5}, 0.5, 4),
        ({"b": 4.0}, 4.0, 1),
        ({"a": 2.0}, 2.0, 2),
    ]


def _add(stats: StepStats, steps, first: int = 0) -> None:
    for i, (losses, total, size) in enumerate(steps, first):
        tensors = {k: torch.tensor(v) for k, v in losses.items()}
        assert stats.add(i, tensors, torch.tensor(total), None, size)


def _manual_mean(steps, task: str | None) -> float:
    pairs = [
        (losses[task] if task else total, size)
        for losses, total, size in steps
        if task is None or task in losses
    ]
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)


def test_epoch_and_interval_means_equal_a_manual_batch_weighted_average():
    stats = StepStats(["a", "b"])
    steps = _steps()
    _add(stats, steps[:2])
    interval = stats.logged("interval")
    assert set(interval) == {"train/loss_step"}
    assert float(interval["train/loss_step"]) == pytest.approx(_manual_mean(steps[:2], None))
    stats.reset_interval()
    _add(stats, steps[2:], first=2)
    assert float(stats.logged("interval")["train/loss_step"]) == pytest.approx(
        _manual_mean(steps[2:], None)
    )
    epoch = stats.logged("epoch")
    assert float(epoch["train/loss_epoch"]) == pytest.approx(_manual_mean(steps, None))
    for task in ("a", "b"):
        assert float(epoch[f"train/{task}/loss"]) == pytest.approx(_manual_mean(steps, task))


def test_saved_state_continues_the_same_epoch_means():
    steps = _steps()
    whole = StepStats(["a", "b"])
    _add(whole, steps)
    first = StepStats(["a", "b"])
    _add(first, steps[:3])
    saved = first.state_dict()
    resumed = StepStats(["a", "b"])
    resumed.load_state_dict(saved)
    _add(resumed, steps[3:], first=3)
    want, got = whole.logged("epoch"), resumed.logged("epoch")
    assert want.keys() == got.keys()
    for key in want:
        assert float(got[key]) == pytest.approx(float(want[key]))
    other = StepStats(["a", "c"])
    other.load_state_dict(saved)  # another run's tasks: ignored, not mixed in
    assert other.logged("epoch") == {}


def test_the_first_non_finite_loss_is_named_by_step_and_task():
    stats = StepStats(["a", "b"])
    _add(stats, _steps()[:2])
    stats.add(7, {"b": torch.tensor(float("inf"))}, torch.tensor(float("inf")), None, 2)
    stats.add(8, {"a": torch.tensor(float("nan"))}, torch.tensor(float("nan")), None, 2)
    assert stats.first_non_finite() == (7, "task 'b'")
    with pytest.raises(NonFiniteLossError, match=r"step 7 \(epoch 0\), task 'b'"):
        stats.check()
    aux = StepStats(["a"])
    aux.add(3, {"a": torch.tensor(1.0)}, torch.tensor(float("nan")), torch.tensor(float("nan")), 1)
    assert aux.first_non_finite() == (3, "in the total loss")
    # the finite values still count; the bad ones are kept out of the sums
    assert float(stats.logged("epoch")["train/a/loss"]) == pytest.approx(1.0)


def test_skip_policy_refuses_the_step_and_reports_it_once():
    stats = StepStats(["a"], policy="skip")
    assert not stats.add(4, {"a": torch.tensor(float("nan"))}, torch.tensor(float("nan")), None, 2)
    assert stats.add(5, {"a": torch.tensor(2.0)}, torch.tensor(2.0), None, 2)
    assert stats.first_non_finite() is None  # nothing non-finite was recorded
    assert stats.skip_report() == (
        "skipped 1 update(s) with a non-finite training loss; the first at step 4, task 'a'"
    )
    assert stats.skip_report() is None
    assert float(stats.logged("epoch")["train/loss_epoch"]) == pytest.approx(2.0)


# ---- in a real fit ----------------------------------------------------------------------------
class _HostReads(TorchFunctionMode):
    """Counts tensor methods that read values back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _count_training(monkeypatch) -> tuple[_HostReads, list[str]]:
    """Host reads inside training steps, and the names logged while training."""
    reads = _HostReads()
    logged: list[str] = []
    step = MultiTaskModule.training_step
    log = MultiTaskModule.log  # log_dict calls it once per value

    def counted_step(self, batch, batch_idx):
        with reads:
            return step(self, batch, batch_idx)

    def counted_log(self, name, *args, **kwargs):
        if self.trainer.training:
            logged.append(name)
        return log(self, name, *args, **kwargs)

    monkeypatch.setattr(MultiTaskModule, "training_step", counted_step)
    monkeypatch.setattr(MultiTaskModule, "log", counted_log)
    return reads, logged


def test_a_training_step_neither_syncs_nor_logs_per_task(tmp_path, monkeypatch):
    reads, logged = _count_training(monkeypatch)
    config = toy_config(max_epochs=1, trainer={"log_every_n_steps": 5, "limit_val_batches": 0})
    code, run_dir = _fit(tmp_path, config)
    assert code == 0
    assert reads.calls == []  # 18 training steps, not one value read back to the host
    # one value per log interval (steps 5, 10, 15 of 18), then the epoch means: no more
    assert logged[:3] == ["train/loss_step"] * 3
    assert sorted(logged[3:]) == ["train/loss_epoch", "train/ta/loss", "train/tb/loss"]
    steps = [int(r["step"]) for r in _rows(run_dir) if r.get("train/loss_step")]
    assert steps == [4, 9, 14]


@pytest.mark.slow
def test_mid_epoch_resume_reports_the_whole_epochs_mean(tmp_path):
    """Issue 12 item 10: the resumed epoch's train/loss_epoch averages the whole epoch."""
    config = toy_config(
        max_epochs=2, run={"checkpoint_every_n_steps": 4, "keep_step_checkpoints": -1}
    )
    code, reference = _fit(tmp_path, config, name="reference")
    assert code == 0
    killed = tmp_path / "killed"
    shutil.copytree(reference, killed)  # as if killed right after step-24.ckpt (epoch 1)
    for ckpt in (killed / "checkpoints").glob("*.ckpt"):
        if ckpt.name == "last.ckpt" or (
            ckpt.name.startswith("step-") and int(ckpt.stem.split("-")[1]) > 24
        ):
            ckpt.unlink()
    code = mtl_run([str(tmp_path / "reference.yaml"), "--run-dir", str(killed), "--resume"])
    assert code == 0
    want, got = _epoch_rows(reference), _epoch_rows(killed)
    assert set(got) == {0, 1}
    for epoch in (0, 1):
        assert got[epoch].keys() == want[epoch].keys()
        for key, value in want[epoch].items():
            assert got[epoch][key] == pytest.approx(value, rel=1e-6), (epoch, key)


class PoisonedToyDataModule(ToyDataModule):
    """ToyDataModule whose ``poison_at``-th training batch of epoch ``poison_epoch`` has
    NaN inputs."""

    def __init__(self, *args, poison_epoch: int = 0, poison_at: int = 6, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.poison_epoch, self.poison_at = poison_epoch, poison_at

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        if (
            trainer is not None
            and trainer.training
            and self.epoch == self.poison_epoch
            and self.consumed == self.poison_at
        ):
            batch = {**batch, "inputs": batch["inputs"] * float("nan")}
        return batch


def _poisoned(policy: str | None, datasets: dict[str, list[str]] | None = None) -> tuple[dict, str]:
    """A 2-epoch toy config with NaN inputs at step 18 + 5 (epoch 1); the bad batch's task."""
    config = toy_config(datasets, max_epochs=2, run={"checkpoint_every_n_steps": 4})
    config["data"]["class_path"] = "test_step_stats.PoisonedToyDataModule"
    config["data"]["init_args"].update(poison_epoch=1, poison_at=6)
    if policy:
        config["model"]["init_args"]["non_finite_loss"] = policy
    data = ToyDataModule(config["data"]["init_args"]["datasets"])
    dataset = data.batch_plan("train", 1)[5][0]
    return config, data.datasets[dataset][0]


def _strict_json(path: Path):
    def refuse(token: str):
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _finite_weights(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(
        torch.isfinite(t).all()
        for t in state.values()
        if isinstance(t, torch.Tensor) and t.is_floating_point()  # balancers keep extra state
    )


def _assert_stopped(code: int, err: str, run_dir: Path, step: int, task: str) -> None:
    """Exit 3 naming the bad step and task; summary.json of the best (epoch 0) checkpoint;
    no checkpoint with non-finite weights or from after the bad step; finite logged means."""
    assert code == exitcodes.NON_FINITE_LOSS == 3
    named = f"non-finite training loss (NaN or infinite) at step {step} (epoch 1), task '{task}'"
    assert named in err
    assert "Traceback" not in err
    summary = _strict_json(run_dir / "summary.json")
    assert set(summary) == {"ta", "tb"}
    assert all(s["epoch"] == 0 for s in summary.values())
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert checkpoints
    assert all(_finite_weights(p) for p in checkpoints)
    steps = [torch.load(p, weights_only=True)["global_step"] for p in checkpoints]
    assert max(steps) <= step  # nothing saved after the bad step
    rows = [r for r in _rows(run_dir) if r.get("train/loss_step")]
    assert all(math.isfinite(float(r["train/loss_step"])) for r in rows)


def test_non_finite_loss_stops_with_its_exit_code_and_no_bad_checkpoint(tmp_path, capsys):
    config, task = _poisoned(None)
    code, run_dir = _fit(tmp_path, config)
    _assert_stopped(code, capsys.readouterr().err, run_dir, 23, task)


def test_skip_policy_skips_the_update_and_finishes(tmp_path):
    config, task = _poisoned("skip")
    with pytest.warns(UserWarning, match=rf"skipped 1 update.*step 23, task '{task}'"):
        code, run_dir = _fit(tmp_path, config)
    assert code == 0
    _strict_json(run_dir / "summary.json")
    assert all(_finite_weights(p) for p in (run_dir / "checkpoints").glob("*.ckpt"))
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 36  # the step counter advances; NaN weights would show above
    epochs = _epoch_rows(run_dir)
    assert all(math.isfinite(v) for row in epochs.values() for v in row.values())


# ---- balanced runs feed the same statistics ----------------------------------------------------
UPGRAD = {
    "class_path": "runtime.balancing.Aggregate",
    "init_args": {"aggregator": {"class_path": "torchjd.aggregation.UPGrad"}},
}
#: the balancers a balanced run goes through: a loss weighting and a gradient method
BALANCERS = {"uncertainty": "runtime.balancing.Uncertainty", "upgrad": UPGRAD}
#: a gradient method needs every task in every step: one dataset with both tasks
BOTH_TASKS = {"ab": ["ta", "tb"]}


def _balanced_poisoned(name: str, policy: str | None) -> tuple[dict, str, int, int]:
    """``_poisoned`` with a balancer; also the bad step and the steps of the two epochs."""
    if name == "upgrad":
        pytest.importorskip("quadprog")
    config, task = _poisoned(policy, BOTH_TASKS if name == "upgrad" else None)
    config["model"]["init_args"]["balancer"] = BALANCERS[name]
    per_epoch = len(ToyDataModule(config["data"]["init_args"]["datasets"]).batch_plan("train", 0))
    return config, task, per_epoch + 5, 2 * per_epoch


@pytest.mark.parametrize("name", list(BALANCERS))
def test_a_balanced_run_stops_on_a_non_finite_loss_too(tmp_path, capsys, name):
    config, task, bad, _ = _balanced_poisoned(name, None)
    code, run_dir = _fit(tmp_path, config)
    _assert_stopped(code, capsys.readouterr().err, run_dir, bad, task)


@pytest.mark.parametrize("name", list(BALANCERS))
def test_a_balanced_run_skips_a_non_finite_update(tmp_path, name):
    config, task, bad, steps = _balanced_poisoned(name, "skip")
    with pytest.warns(UserWarning, match=rf"skipped 1 update.*step {bad}, task '{task}'"):
        code, run_dir = _fit(tmp_path, config)
    assert code == 0
    _strict_json(run_dir / "summary.json")
    assert all(_finite_weights(p) for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert max(int(r["step"]) for r in _rows(run_dir)) == steps - 1  # the counter advances
    weights = [
        float(v) for r in _rows(run_dir) for k, v in r.items() if k.startswith("train/w") and v
    ]
    assert weights
    assert all(math.isfinite(v) for v in weights)
    epochs = _epoch_rows(run_dir)
    assert all(math.isfinite(v) for row in epochs.values() for v in row.values())


def test_a_balanced_run_logs_the_same_loss_means_as_an_unbalanced_one(tmp_path, monkeypatch):
    """Static weights of 1 train exactly like no balancer: the same (unweighted) per-task
    epoch means and interval means, logged once per interval, with the weights beside them."""

    def config() -> dict:
        made = toy_config(max_epochs=2, trainer={"log_every_n_steps": 5, "limit_val_batches": 0})
        made["model"]["init_args"]["tasks"]["ta"]["init_args"]["loss_weight"] = 3.0
        return made

    code, plain = _fit(tmp_path, config(), name="plain")
    assert code == 0
    _, logged = _count_training(monkeypatch)
    balanced = config()
    balanced["model"]["init_args"]["balancer"] = {
        "class_path": "runtime.balancing.Static",
        "init_args": {"weights": {}},
    }
    code, run_dir = _fit(tmp_path, balanced, name="balanced")
    assert code == 0
    want, got = _epoch_rows(plain), _epoch_rows(run_dir)
    assert set(got) == {0, 1}
    assert {"train/ta/loss", "train/tb/loss"} <= set(got[0])
    for epoch, row in want.items():
        assert got[epoch].keys() == row.keys()
        for key, value in row.items():
            assert got[epoch][key] == pytest.approx(value, rel=1e-6), (epoch, key)
    plain_steps = {
        r["step"]: float(r["train/loss_step"]) for r in _rows(plain) if r.get("train/loss_step")
    }
    rows = [r for r in _rows(run_dir) if r.get("train/loss_step")]
    assert {r["step"]: pytest.approx(float(r["train/loss_step"])) for r in rows} == plain_steps
    weight_steps = {
        r["step"]
        for r in _rows(run_dir)
        if any(v and k.startswith("train/weight/") for k, v in r.items())
    }
    assert weight_steps == set(plain_steps)  # the weights at the log interval, nothing more
    per_step = [n for n in logged if n.startswith("train/") and n != "train/loss_step"]
    # per interval one weight of the step's task; per epoch the means: nothing per step
    assert sum(n.startswith("train/weight/") for n in per_step) == len(plain_steps)


def test_a_balanced_training_step_neither_syncs_nor_logs(tmp_path, monkeypatch):
    reads, logged = _count_training(monkeypatch)
    config = toy_config(max_epochs=1, trainer={"log_every_n_steps": 5, "limit_val_batches": 0})
    config["model"]["init_args"]["balancer"] = "runtime.balancing.Uncertainty"
    code, _ = _fit(tmp_path, config)
    assert code == 0
    assert reads.calls == []  # 18 balanced steps, not one value read back to the host
    # per log interval (3 of 18 steps) the loss and the weight of the step's task, then the
    # epoch means: nothing per step
    intervals = [n for n in logged if n.endswith("_step") or n.startswith("train/weight/")]
    assert intervals.count("train/loss_step") == 3
    assert len(intervals) == 6
    assert {n for n in logged if n not in intervals} == {
        "train/loss_epoch",
        "train/ta/loss",
        "train/tb/loss",
    }
