"""mtl-federate: partitions, bad input, and a 2-client 2-round run on Flower's simulation
engine, interrupted between rounds and resumed, its averaging checked by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from federated_fixture import tiny_run_config, two_dataset_run_config

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

# Not importorskip: the module is only looked up, so collecting this file imports no Flower.
if os.environ.get("CI") != "true" and importlib.util.find_spec("flwr") is None:
    pytest.skip("the [federated] extra (flwr) is not installed", allow_module_level=True)

from runtime.data.errors import DataConfigError  # noqa: E402
from runtime.federated.partition import partition_indices  # noqa: E402


def federate(*args: str, cwd: Path, script: list[str] | None = None) -> subprocess.CompletedProcess:
    command = script or [str(BIN / "mtl-federate")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


def test_iid_shares_every_sample_once() -> None:
    parts = partition_indices(np.zeros(10, dtype=np.int64), 3, "iid", 0.5, 0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert sorted(len(p) for p in parts) == [3, 3, 4]


def test_dirichlet_skews_labels_and_is_seeded() -> None:
    labels = np.repeat(np.arange(4), 50)
    parts = partition_indices(labels, 4, "dirichlet", 0.1, 7)
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))
    shares = [np.bincount(labels[p], minlength=4) / len(p) for p in parts]
    assert max(s.max() for s in shares) > 0.6  # some client is dominated by one label
    again = partition_indices(labels, 4, "dirichlet", 0.1, 7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_more_clients_than_samples_is_refused() -> None:
    with pytest.raises(DataConfigError, match="5 clients but only 4"):
        partition_indices(np.zeros(4, dtype=np.int64), 5, "iid", 0.5, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients must be at least 1, got 0"),
        (["--clients", "500"], "500 clients but only"),
        (["--clients", "2", "--strategy", "fedavgg"], "did you mean 'fedavg'"),
        (["--clients", "2", "--heads", "shared"], "choose one of local, averaged"),
        (["--clients", "2", "--partition", "datasets"], "--partition datasets"),
        (["--clients", "2", "--alpha", "nan"], "'nan' is not a finite number"),
        (["--clients", "2", "--proximal-mu", "inf"], "'inf' is not a finite number"),
        (["--clients", "2", "--fraction", "-inf"], "'-inf' is not a finite number"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = tiny_run_config(tmp_path)
    result = federate(str(config), "--rounds", "1", "--run-dir", "fed", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "fed").exists()


def _global(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "global.pt", weights_only=True)


@pytest.mark.slow
def test_two_clients_two_rounds_resume_and_hand_average(tmp_path: Path) -> None:
    config = str(tiny_run_config(tmp_path))
    common = ["--clients", "2", "--rounds", "2", "--partition", "dirichlet", "--alpha", "1"]
    full = federate(config, *common, "--run-dir", "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.strip().splitlines()[-1] == "full"
    run = tmp_path / "full"

    # FedAvg by hand: round 2's global tensors are the clients' tensors after their local
    # training, weighted by their training samples (heads stay local: only the encoder).
    rows = list(csv.DictReader((run / "clients.csv").open()))
    weights = {
        int(r["client"]): float(r["num-examples"])
        for r in rows
        if r["round"] == "2" and r["phase"] == "train"
    }
    assert sorted(weights) == [0, 1]
    assert sum(weights.values()) > 0
    global_ = _global(run)
    assert global_
    assert all(name.startswith("encoder.") for name in global_)
    local = {
        c: torch.load(
            run / "rounds/round_0002/clients" / f"client_{c:03d}/checkpoints/last.ckpt",
            weights_only=True,
        )["state_dict"]
        for c in weights
    }
    total = sum(weights.values())
    for name, value in global_.items():
        by_hand = sum(weights[c] / total * local[c][f"model.{name}"] for c in weights)
        torch.testing.assert_close(value, by_hand, rtol=1e-5, atol=1e-6)
    heads = (
        [local[c]["model.decoders.kind.0.linear.weight"] for c in (0, 1)]
        if ("model.decoders.kind.0.linear.weight" in local[0])
        else None
    )
    if heads is not None:  # personalized heads differ between the clients
        assert not torch.equal(*heads)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_done"] == 2
    assert summary["bytes_sent"] > 0
    assert "kind/accuracy" in summary["global"]
    assert (run / "rounds.png").stat().st_size > 0
    per_round = list(csv.DictReader((run / "rounds.csv").open()))
    assert [r["round"] for r in per_round] == ["1", "2"]
    assert all(int(r["bytes_sent"]) > 0 for r in per_round)
    # each client is an ordinary run directory
    eval_ = subprocess.run(
        [str(BIN / "mtl-eval"), str(run / "clients/client_000"), "--device", "cpu"],
        capture_output=True, text=True, timeout=200, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert eval_.returncode == 0, eval_.stderr
    assert "kind" in eval_.stdout

    # interrupted between round 1 and round 2, then resumed: the same weights as unbroken
    script = [sys.executable, str(TESTS / "federate_interrupt.py"), "1"]
    cut = federate(config, *common, "--run-dir", "cut", cwd=tmp_path, script=script)
    assert cut.returncode != 0
    assert "stopped after round 1" in cut.stderr
    assert [p.name for p in sorted((tmp_path / "cut/rounds").iterdir())] == ["round_0001"]
    resumed = federate(config, *common, "--run-dir", "cut", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = _global(tmp_path / "cut")
    assert again.keys() == global_.keys()
    for name in global_:
        assert torch.equal(again[name], global_[name]), name
    changed = federate(config, *common, "--seed", "3", "--run-dir", "cut", "--resume", cwd=tmp_path)
    assert changed.returncode == 2
    assert "seed (recorded 0, given 3)" in changed.stderr


def test_metrics_of_clients_with_different_tasks_average_over_those_that_report_them() -> None:
    from flwr.app import MetricRecord, RecordDict

    from runtime.federated.flower import weighted_by_presence

    def reply(**metrics: float) -> RecordDict:
        return RecordDict({"metrics": MetricRecord(metrics)})

    # "odd" is NaN where a client does not report it (flower.same_keys fills the gaps)
    nan = float("nan")
    replies = [
        reply(**{"num-examples": 30, "kind/acc": 0.5, "odd/acc": nan, "val/loss": 1.0}),
        reply(**{"num-examples": 10, "kind/acc": 0.9, "odd/acc": nan, "val/loss": 3.0}),
        reply(**{"num-examples": 20, "kind/acc": nan, "odd/acc": 0.25, "val/loss": 2.0}),
    ]
    averaged = dict(weighted_by_presence(replies, "num-examples"))
    assert averaged == pytest.approx({"kind/acc": 0.6, "odd/acc": 0.25, "val/loss": 100 / 60})


@pytest.mark.slow
def test_each_dataset_a_client_with_its_own_tasks(tmp_path: Path) -> None:
    """The default for a run with several datasets: each is a client, and each reports only
    its own task's metrics (Flower aggregates only replies with the same metric keys)."""
    config = str(two_dataset_run_config(tmp_path))
    done = federate(config, "--rounds", "1", "--run-dir", "by_dataset", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "by_dataset"
    rows = list(csv.DictReader((run / "clients.csv").open()))
    scored = {int(r["client"]): r for r in rows if r["phase"] == "global model"}
    assert sorted(scored) == [0, 1]
    assert (bool(scored[0]["kind/accuracy"]), bool(scored[0]["odd/accuracy"])) == (True, False)
    assert (bool(scored[1]["kind/accuracy"]), bool(scored[1]["odd/accuracy"])) == (False, True)
    summary = json.loads((run / "summary.json").read_text())
    # each task's global figure is that of the one client that holds it, not halved
    assert summary["global"]["kind/accuracy"] == pytest.approx(float(scored[0]["kind/accuracy"]))
    assert summary["global"]["odd/accuracy"] == pytest.approx(float(scored[1]["odd/accuracy"]))


@pytest.mark.slow
def test_averaged_heads_are_averaged_over_the_clients_that_hold_their_task(tmp_path: Path) -> None:
    """With each dataset a client and --heads averaged, a client sends back the head of a task
    it does not hold unchanged: that copy takes no part in the head's average."""
    config = str(two_dataset_run_config(tmp_path))
    args = ["--rounds", "1", "--heads", "averaged", "--run-dir", "avg"]
    done = federate(config, *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "avg"
    global_ = _global(run)
    local = [
        torch.load(
            run / "rounds/round_0001/clients" / f"client_{c:03d}/checkpoints/last.ckpt",
            weights_only=True,
        )["state_dict"]
        for c in (0, 1)
    ]
    samples = {
        int(r["client"]): float(r["num-examples"])
        for r in csv.DictReader((run / "clients.csv").open())
        if r["phase"] == "train"
    }
    heads = {"kind": 0, "odd": 1}  # the client holding each task
    assert any(name.startswith("decoders.kind.") for name in global_)
    for name, value in global_.items():
        task = name.split(".")[1] if name.startswith("decoders.") else None
        if task is not None:  # its holder's head as trained
            torch.testing.assert_close(value, local[heads[task]][f"model.{name}"], rtol=0, atol=0)
        else:  # shared: FedAvg over both clients
            total = samples[0] + samples[1]
            by_hand = sum(samples[c] / total * local[c][f"model.{name}"] for c in (0, 1))
            torch.testing.assert_close(value, by_hand, rtol=1e-5, atol=1e-6)


def test_fedprox_term_pulls_gradients_towards_the_global_weights(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from runtime.federated.proximal import ProximalTerm

    model = torch.nn.Linear(3, 2)
    reference = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    torch.save(reference, tmp_path / "global.pt")
    module = SimpleNamespace(model=model, device=torch.device("cpu"))
    term = ProximalTerm(str(tmp_path / "global.pt"), mu=0.5)
    term.on_train_start(None, module)  # type: ignore[arg-type]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    term.on_after_backward(None, module)  # type: ignore[arg-type]
    for p in model.parameters():
        torch.testing.assert_close(p.grad, 1 + 0.5 * p.detach())


def test_client_configs_per_dataset_and_travelling_tensors() -> None:
    from runtime.federated.clients import Federation, client_config

    modules = {"a": {"class_path": "A"}, "b": {"class_path": "B"}}
    config = {
        "model": {},
        "data": {"init_args": {"data_modules": modules, "batch_sizes": {"a": 4, "b": 8}}},
    }
    fed = Federation(root="/x", config=config, clients=2, rounds=1, partition="datasets")
    second = client_config(fed, 1)["data"]["init_args"]
    assert second["data_modules"] == {"b": {"class_path": "B"}}
    assert second["batch_sizes"] == {"b": 8}
    assert fed.shared("encoder.0.weight")
    assert not fed.shared("decoders.kind.0.weight")
    fed.heads = "averaged"
    assert fed.shared("decoders.kind.0.weight")
    shared = Federation(root="/x", config=config, clients=3, rounds=1, partition="iid")
    wrapped = client_config(shared, 2)["data"]["init_args"]["data_modules"]["a"]
    assert wrapped["init_args"]["dataset"] == {"class_path": "A"}
    assert (wrapped["init_args"]["client"], wrapped["init_args"]["num_clients"]) == (2, 3)
