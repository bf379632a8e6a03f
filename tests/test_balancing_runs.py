"""Balancers inside real ``mtl-run`` fits: the no-balancer path is unchanged, every
documented method trains the quickstart, ``all_datasets`` batches, what the run directory and
``mtl-compare`` show."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from balancing_fixture import FIXTURE, quickstart_config, summary, train

from runtime.cli import main as mtl_run
from runtime.data.sampler import MultiDatasetBatchSampler
from runtime.tasks import ClassificationTask

AGG = "runtime.balancing.Aggregate"


def aggregate(name: str, **args) -> str:
    inner = f"{{class_path: torchjd.aggregation.{name}"
    inner += f", init_args: {json.dumps(args)}}}" if args else "}"
    return f"{{class_path: {AGG}, init_args: {{aggregator: {inner}}}}}"


def fit_all_datasets(config: Path, run_dir: Path, *overrides: str) -> int:
    """``mtl-run fit`` of the quickstart into ``run_dir``: CPU, quiet, ``all_datasets``
    batches, one validation batch; ``overrides`` add to it."""
    return mtl_run(
        [
            "fit",
            str(config),
            "--run-dir",
            str(run_dir),
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            "--data.init_args.sample_mode=all_datasets",
            *overrides,
        ]
    )


#: every method docs/balancing.md documents, as the balancer override, and what it needs
METHODS = {
    "static": ("{class_path: runtime.balancing.Static, init_args: {weights: {parity: 0.5}}}", None),
    "uncertainty": ("runtime.balancing.Uncertainty", None),
    "dwa": ("runtime.balancing.DWA", None),
    "random": ("runtime.balancing.RandomWeighting", None),
    "gls": ("runtime.balancing.GeometricMean", None),
    "famo": ("runtime.balancing.FAMO", None),
    "gradnorm": ("runtime.balancing.GradNorm", None),
    "mgda": (aggregate("MGDA"), None),
    "upgrad": (aggregate("UPGrad"), "quadprog"),
    "pcgrad": (aggregate("PCGrad"), None),
    "imtlg": (aggregate("IMTLG"), None),
    "aligned": (aggregate("AlignedMTL"), None),
    "graddrop": (aggregate("GradDrop"), None),
    "config": (aggregate("ConFIG"), None),
    "cagrad": (aggregate("CAGrad", c=0.4), "cvxpy"),
    "nash": (aggregate("NashMTL", n_tasks=3), "cvxpy"),
    "dualproj": (aggregate("DualProj"), "quadprog"),
    "gradvac": (aggregate("GradVac"), None),
}


def test_without_balancer_the_weights_equal_the_recorded_ones(tmp_path: Path):
    want = json.loads(FIXTURE.read_text())
    got = summary(train(tmp_path))
    assert got.keys() == want.keys()
    for name, values in want.items():
        assert got[name] == pytest.approx(values, rel=1e-5, abs=1e-7), name


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_every_documented_method_trains_the_quickstart(tmp_path: Path, method: str):
    spec, needs = METHODS[method]
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{needs} missing (pip install 'mtl-toolkit[balancing]')")
    config = quickstart_config(tmp_path)
    run_dir = tmp_path / "run"
    code = fit_all_datasets(
        config,
        run_dir,
        "--trainer.max_steps=4",
        "--trainer.log_every_n_steps=2",
        "--trainer.enable_model_summary=false",
        f"--model.init_args.balancer={spec}",
    )
    assert code == 0
    before = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert before["global_step"] == 4
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["balancer"]["class_path"].startswith("runtime.balancing.")
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    if method not in ("graddrop", "config"):  # no per-task weights to show
        assert "train/weight/parity" in header
    assert (run_dir / "task_weights.png").exists() == ("train/weight/parity" in header)


@pytest.mark.slow
def test_dwa_weights_follow_the_logged_epoch_means(tmp_path: Path):
    """DWA's weights in epoch 3 are the paper's formula applied to the ``train/<task>/loss``
    the run logged for epochs 1 and 2; equal before."""
    config = quickstart_config(tmp_path)
    run_dir = tmp_path / "run"
    code = fit_all_datasets(
        config,
        run_dir,
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=3",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_model_summary=false",
        "--model.init_args.balancer={class_path: runtime.balancing.DWA, "
        "init_args: {temperature: 2.0}}",
    )
    assert code == 0
    with (run_dir / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [c.removeprefix("train/weight/") for c in rows[0] if c.startswith("train/weight/")]
    assert len(tasks) >= 2
    means = {
        int(r["epoch"]): [float(r[f"train/{t}/loss"]) for t in tasks]
        for r in rows
        if r.get(f"train/{tasks[0]}/loss")
    }
    weights = {}
    for r in rows:
        if r.get(f"train/weight/{tasks[0]}"):
            weights.setdefault(int(r["epoch"]), []).append(
                [float(r[f"train/weight/{t}"]) for t in tasks]
            )
    assert sorted(weights) == [0, 1, 2]
    assert sorted(means) == [0, 1, 2]
    for epoch in (0, 1):
        assert all(w == [1.0] * len(tasks) for w in weights[epoch])
    expo = [math.exp(new / old / 2.0) for old, new in zip(means[0], means[1], strict=True)]
    want = [len(tasks) * e / sum(expo) for e in expo]
    assert want != pytest.approx([1.0] * len(tasks), abs=1e-4)  # a real test of the formula
    for logged in weights[2]:
        assert logged == pytest.approx(want, rel=1e-5)


def test_all_datasets_without_balancer_sums_every_task(tmp_path: Path):
    config = quickstart_config(tmp_path)
    run_dir = tmp_path / "run"
    assert (
        fit_all_datasets(
            config,
            run_dir,
            "--trainer.max_steps=3",
            "--trainer.log_every_n_steps=1",
        )
        == 0
    )
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert "train/digits_low/loss" in rows[0]
    assert "train/parity/loss" in rows[0]
    assert json.loads((run_dir / "run_info.json").read_text())["balancer"] is None


def test_needs_all_tasks_with_per_dataset_mode_is_refused_at_check(tmp_path: Path, capsys):
    config = quickstart_config(tmp_path)
    code = mtl_run(
        ["fit", str(config), "--check", "--model.init_args.balancer=" + aggregate("MGDA")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "sample_mode: all_datasets" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# ---- the all_datasets sampler -------------------------------------------------------------
def sampler(rank: int = 0, world: int = 1, refill: bool = True) -> MultiDatasetBatchSampler:
    return MultiDatasetBatchSampler(
        [100, 37, 250],
        [8, 4, 16],
        "all_datasets",
        refill=refill,
        seed=3,
        rank=rank,
        world_size=world,
    )


def test_all_datasets_steps_hold_every_dataset_with_its_own_batch_size():
    s = sampler()
    steps = list(s)
    assert len(steps) == len(s) == max(-(-100 // 8), -(-37 // 4), -(-250 // 16))
    for keys in steps:
        assert [k.dataset for k in keys] == [0, 1, 2]
        assert [len(k.indices) for k in keys] == [8, 4, 16]
    first_pass = np.concatenate([k[2].indices for k in steps])
    assert sorted(first_pass[:250]) == list(range(250))  # the largest dataset: each sample once
    assert len(sampler(refill=False)) == 37 // 4 + 1  # the smallest one's batches


def test_all_datasets_ranks_are_disjoint_and_resume_is_the_tail():
    ranks = [list(sampler(r, 2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    sizes, widths = [100, 37, 250], [16, 8, 32]  # global batch = 2 ranks x batch size
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        for d, (ka, kb) in enumerate(zip(a, b, strict=True)):
            if (step + 1) * widths[d] <= sizes[d]:  # within one pass (refill may wrap)
                assert not set(ka.indices) & set(kb.indices)
    s = sampler()
    s.set_epoch(1)
    full = list(s)
    resumed = sampler()
    resumed.load_state_dict({"epoch": 1, "step": 5})
    tail = list(resumed)
    assert len(tail) == len(full) - 5
    for a, b in zip(tail, full[5:], strict=True):
        assert all(np.array_equal(x.indices, y.indices) for x, y in zip(a, b, strict=True))


# ---- mtl-compare --------------------------------------------------------------------------
def test_compare_shows_the_balancer(tmp_path: Path, monkeypatch):
    from scripts import compare

    runs = {}
    for name, balancer in (("mt", {"class_path": "runtime.balancing.FAMO"}), ("st", None)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(
            "model:\n  init_args:\n    tasks:\n      t:\n        class_path: "
            "runtime.tasks.ClassificationTask\n"
        )
        (run / "run_info.json").write_text(json.dumps({"balancer": balancer}))
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "t": {
                        "accuracy": 0.8 if balancer else 0.7,
                        "macro_f1": 0.5,
                        **ClassificationTask(num_classes=2).metric_record().to_json(),
                    }
                }
            )
        )
        runs[name] = run
    report = compare.compare([compare.read_run(runs["mt"])], [compare.read_run(runs["st"])])
    assert report["balancers"] == ["FAMO"]
    assert "balancer: FAMO" in compare.render(report)
    assert compare.balancer_label(None) == "sum"
    assert (
        compare.balancer_label(
            {
                "class_path": "runtime.balancing.Aggregate",
                "init_args": {"aggregator": {"class_path": "torchjd.aggregation.UPGrad"}},
            }
        )
        == "Aggregate(UPGrad)"
    )
