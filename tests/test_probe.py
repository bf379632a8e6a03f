"""mtl-probe on a tiny pretrained run: nested stratified subsets, outputs, and bad input."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from file_run import head, mlp_encoder, run_config
from helpers import assert_bad_input
from toy_run_dir import train_toy_run

from scripts.probe import main
from scripts.probe_train import nested_subsets

DATA = {
    "class_path": "runtime.data.activity_sim.SimulatedActivityModule",
    "init_args": {"num_users": 2, "samples_per_user": 40, "length": 8, "seed": 0},
}
ACTIVITIES = ["rest", "walk", "run", "stairs", "cycle"]


def ssl_config(encoder: list, width: int) -> dict:
    """One self-supervised objective (channel means) on the generated recordings."""
    ssl = {
        "class_path": "runtime.data.ssl.SelfSupervisedModule",
        "init_args": {
            "base": DATA,
            "task": "stats",
            "objective": {
                "class_path": "runtime.data.pretext.FeatureStatistics",
                "init_args": {"statistics": ["mean"]},
            },
        },
    }
    tasks = {
        "stats": {"class_path": "runtime.tasks.RegressionTask", "init_args": {"num_outputs": 6}}
    }
    return run_config(
        encoder,
        {"stats": head("RegressionHead", width, 6)},
        tasks,
        {"data_modules": {"ssl": ssl}, "batch_sizes": {"ssl": 16}},
        trainer={"limit_train_batches": 2, "logger": False, "enable_model_summary": False},
    )


ENCODER = mlp_encoder(6, 8)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("probe"), ssl_config(ENCODER, 8), "ssl")


def downstream(folder: Path, data: dict | None = None, tasks: dict | None = None) -> Path:
    doc: dict = {
        "name": "activity",
        "data": data
        or {**DATA, "init_args": {**DATA["init_args"], "targets": {"activity": "activity"}}},
    }
    if tasks is None:
        tasks = {
            "activity": {
                "class_path": "runtime.tasks.ClassificationTask",
                "init_args": {"class_names": ACTIVITIES},
            }
        }
    if tasks:
        doc["model"] = {"init_args": {"tasks": tasks}}
    path = folder / "downstream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def probe(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def test_subsets_are_stratified_and_nested():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 8 + [-100] * 5)
    np.random.default_rng(0).shuffle(labels)
    fractions = [0.01, 0.05, 0.1, 0.25, 1.0]
    subsets = nested_subsets(labels, fractions, seed=3)
    for small, large in itertools.pairwise(fractions):
        assert set(subsets[small]) <= set(subsets[large])
    for f, rows in subsets.items():
        picked = labels[rows]
        assert (picked != -100).all()
        assert len(set(rows)) == len(rows)
        for cls, n in ((0, 50), (1, 30), (2, 8)):
            assert (picked == cls).sum() == max(1, int(np.ceil(f * n - 1e-9)))
    assert len(subsets[1.0]) == 88
    again = nested_subsets(labels, fractions, seed=3)
    other = nested_subsets(labels, fractions, seed=4)
    assert all(np.array_equal(again[f], subsets[f]) for f in fractions)
    assert not np.array_equal(other[0.25], subsets[0.25])


def test_probe_writes_table_json_and_figures(pretrained, tmp_path):
    out = tmp_path / "probe"
    result = probe(
        f"pre={pretrained}", "--data", downstream(tmp_path), "--fractions", "0.1,50%,1",
        "--seeds", "0,1", "--finetune", "--steps", "3", "--ckpt", "last", "-o", out,
        "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for line in (
        "pre (linear)",
        "pre (fine-tune)",
        "random init (linear)",
        "random init (scratch)",
    ):
        assert f"| {line} |" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "curve.png", "embedding.png", "probe.json", "probe.md"
    ]  # fmt: skip
    for png in ("curve.png", "embedding.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "probe.json").read_text())
    assert report["task"] == "activity"
    assert report["fractions"] == [0.1, 0.5, 1.0]
    records = report["records"]
    # (pre linear, pre fine-tune, random-init linear, scratch) x fractions x seeds
    assert len(records) == 4 * 3 * 2
    for mode in ("linear", "finetune", "scratch"):
        for seed in (0, 1):
            sizes = [
                r["train_samples"]
                for r in sorted(records, key=lambda r: r["fraction"])
                if r["mode"] == mode and r["seed"] == seed
            ]
            assert sizes == sorted(sizes)
            assert sizes[-1] == report["train_samples"]
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 for r in records)
    line = report["summary"]["pre (linear)"]["1.0"]["accuracy"]
    values = [
        r["accuracy"]
        for r in records
        if r["pretraining"] == "pre" and r["mode"] == "linear" and r["fraction"] == 1.0
    ]
    assert line["n"] == 2
    assert line["mean"] == pytest.approx(np.mean(values))
    # the same inputs give the same figures
    again = probe(
        f"pre={pretrained}", "--data", downstream(tmp_path), "--fractions", "0.1,50%,1",
        "--seeds", "0,1", "--finetune", "--steps", "3", "--ckpt", "last", "-o", out,
        "--device", "cpu", "--force",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((out / "probe.json").read_text())["records"] == records


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.1", "nan", "abc"])
def test_a_fraction_outside_0_1_is_refused(pretrained, tmp_path, fraction):
    out = tmp_path / "out"
    result = probe(
        pretrained, "--data", downstream(tmp_path), "--fractions", f"0.1,{fraction}", "-o", out
    )
    assert_bad_input(result, "--fractions", fraction)
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1.5", "x"])
def test_a_seed_outside_0_to_2_32_is_refused(pretrained, tmp_path, seed):
    out = tmp_path / "out"
    result = probe(pretrained, "--data", downstream(tmp_path), "--seeds", f"0,{seed}", "-o", out)
    assert_bad_input(result, "--seeds", seed)
    assert not out.exists()


def test_a_run_without_an_encoder_is_refused(tmp_path):
    run = train_toy_run(tmp_path / "runs", ssl_config([], 6), "no_encoder")
    out = tmp_path / "out"
    result = probe(run, "--data", downstream(tmp_path), "--ckpt", "last", "-o", out)
    assert_bad_input(result, str(run), "has no encoder")
    assert not out.exists()


def test_not_a_run_is_refused(tmp_path):
    result = probe(tmp_path, "--data", downstream(tmp_path), "-o", tmp_path / "out")
    assert_bad_input(result, "not a run directory")


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("no_tasks", "no labels to probe"),
        ("regression_only", "no labels to probe"),
        ("self_supervised", "derives its targets from the inputs"),
        ("all_missing", "none of the"),
        ("placeholder", "placeholder"),
    ],
)
def test_a_downstream_config_without_labels_is_refused(pretrained, tmp_path, case, needle):
    if case == "no_tasks":
        config = downstream(tmp_path, tasks={})
    elif case == "regression_only":
        tasks = {"activity": {"class_path": "runtime.tasks.RegressionTask"}}
        config = downstream(tmp_path, tasks=tasks)
    elif case == "self_supervised":
        config = Path("dataset_configs/ssl_augment.yaml").resolve()
        text = config.read_text().replace("${seed}", "0")
        config = tmp_path / "ssl_augment.yaml"
        config.write_text(text)
    elif case == "all_missing":
        data = {
            "class_path": "runtime.data.SyntheticDataModule",
            "init_args": {
                "input_shape": [8, 6],
                "tasks": {"activity": {"kind": "classification", "num_classes": 5}},
                "missing_fraction": 1.0,
            },
        }
        config = downstream(tmp_path, data=data)
    else:
        data = {
            **DATA,
            "init_args": {
                **DATA["init_args"],
                "length": "${length}",
                "targets": {"activity": "activity"},
            },
        }
        config = downstream(tmp_path, data=data)
    out = tmp_path / "out"
    result = probe(pretrained, "--data", config, "--ckpt", "last", "-o", out)
    assert_bad_input(result, needle)
    assert not out.exists()


def test_encoder_that_cannot_read_the_inputs_is_refused(pretrained, tmp_path):
    data = {
        **DATA,
        "class_path": "runtime.data.SyntheticDataModule",
        "init_args": {
            "input_shape": [8, 5],
            "tasks": {"activity": {"kind": "classification", "num_classes": 5}},
        },
    }
    out = tmp_path / "out"
    result = probe(
        pretrained, "--data", downstream(tmp_path, data=data), "--ckpt", "last", "-o", out
    )
    assert_bad_input(result, "cannot read the inputs")
    assert not out.exists()
