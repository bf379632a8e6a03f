"""mtl-compare: per-task figures side by side and delta-m against hand-computed values, read
from summary.json alone (its figures and metric records; no task class is consulted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_bad_input

from scripts.compare import main

#: the metric records mtl-run writes for a classification, regression, multi-label task
RECORDS = {
    "c": {
        "primary_metric": "accuracy",
        "comparison_metrics": ["accuracy", "macro_f1"],
        "higher_is_better": {"accuracy": True, "macro_f1": True},
    },
    "r": {
        "primary_metric": "mae",
        "comparison_metrics": ["mae", "rmse"],
        "higher_is_better": {"mae": False, "rmse": False},
    },
    "m": {
        "primary_metric": "macro_f1",
        "comparison_metrics": ["macro_f1"],
        "higher_is_better": {"macro_f1": True},
    },
}


def compare(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def run_dir(
    root: Path, name: str, summary: dict[str, dict[str, float]], records: dict | None = None
) -> Path:
    """A run directory holding only what mtl-compare reads: summary.json with figures and
    metric records, and a config.yaml that names no task class (nothing to import)."""
    path = root / name
    path.mkdir()
    (path / "config.yaml").write_text("model: {}\n")
    records = RECORDS if records is None else records
    (path / "summary.json").write_text(
        json.dumps({t: {**m, "loss": 0.1, "epoch": 3, **records[t]} for t, m in summary.items()})
    )
    return path


def test_delta_m_matches_a_hand_computation(tmp_path):
    mt = [
        run_dir(
            tmp_path,
            "mt0",
            {"c": {"accuracy": 0.9, "macro_f1": 0.85, "f1_x": 0.1}, "r": {"mae": 1.0, "rmse": 2.0}},
        ),
        run_dir(
            tmp_path,
            "mt1",
            {"c": {"accuracy": 0.8, "macro_f1": 0.75, "f1_x": 0.9}, "r": {"mae": 1.2, "rmse": 2.2}},
        ),
    ]
    st = [
        run_dir(tmp_path, "st_c", {"c": {"accuracy": 0.8, "macro_f1": 0.5}}),
        run_dir(tmp_path, "st_r0", {"r": {"mae": 1.0, "rmse": 2.0}}),
        run_dir(tmp_path, "st_r1", {"r": {"mae": 1.4, "rmse": 2.0}}),
    ]
    out = tmp_path / "gain.json"
    result = compare(*mt, "--baseline", *st, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    # c: accuracy (0.85 - 0.8) / 0.8 = 6.25 %, macro_f1 (0.8 - 0.5) / 0.5 = 60 %
    # r: mae lower is better: -(1.1 - 1.2) / 1.2 = 8.33 %, rmse -(2.1 - 2.0) / 2.0 = -5 %
    c, r = report["tasks"]["c"], report["tasks"]["r"]
    assert c["metrics"]["accuracy"]["delta_pct"] == pytest.approx(6.25)
    assert c["metrics"]["macro_f1"]["delta_pct"] == pytest.approx(60.0)
    assert set(c["metrics"]) == {"accuracy", "macro_f1"}  # not per-class F1
    assert r["metrics"]["mae"]["delta_pct"] == pytest.approx(100 / 12)
    assert r["metrics"]["rmse"]["delta_pct"] == pytest.approx(-5.0)
    assert r["metrics"]["mae"]["single_task"] == {
        "mean": pytest.approx(1.2),
        "std": pytest.approx(0.4 / 2**0.5),
        "n": 2,
    }
    assert c["delta_pct"] == pytest.approx(33.125)
    # per multitask run: run 0 gains (41.25 + 8.33) / 2, run 1 (25 - 5) / 2
    run_gains = [(41.25 + 100 / 12) / 2, (25 - 5) / 2]
    delta = report["delta_m_pct"]
    assert delta["mean"] == pytest.approx((33.125 + (100 / 12 - 5) / 2) / 2)
    assert delta["mean"] == pytest.approx(sum(run_gains) / 2)
    assert delta["std"] == pytest.approx(abs(run_gains[0] - run_gains[1]) / 2**0.5)
    assert delta["n"] == 2
    assert report["skipped"] == {}
    assert f"delta-m = +{delta['mean']:.2f}% ± {delta['std']:.2f} over 2 tasks" in result.stdout
    assert "mae (lower better)" in result.stdout


def test_tasks_without_baseline_are_skipped_and_no_common_task_is_an_error(tmp_path):
    mt = run_dir(
        tmp_path,
        "mt",
        {"c": {"accuracy": 0.9, "macro_f1": 0.9}, "m": {"accuracy": 0.9, "macro_f1": 0.6}},
    )
    st = run_dir(tmp_path, "st", {"c": {"accuracy": 0.9, "macro_f1": 0.9}})
    result = compare(mt, "--baseline", st)
    assert result.exit_code == 0, result.output
    assert "skipped m: no baseline run has it" in result.stdout
    assert "delta-m = +0.00% over 1 tasks (1 multitask run" in result.stdout
    other = run_dir(tmp_path, "other", {"r": {"mae": 1.0, "rmse": 1.0}})
    assert_bad_input(compare(mt, "--baseline", other), "no task is in both")


def test_zero_baseline_is_an_error(tmp_path):
    mt = run_dir(tmp_path, "mt", {"c": {"accuracy": 0.5, "macro_f1": 0.5}})
    st = run_dir(tmp_path, "st", {"c": {"accuracy": 0.5, "macro_f1": 0.0}})
    assert_bad_input(compare(mt, "--baseline", st), "task 'c'", "macro_f1 is 0")


def test_bad_run_directories_exit_2(tmp_path):
    mt = run_dir(tmp_path, "mt", {"c": {"accuracy": 0.5, "macro_f1": 0.5}})
    unscored = tmp_path / "unscored"
    unscored.mkdir()
    (unscored / "config.yaml").write_text("model: {}\n")
    assert_bad_input(compare(mt, "--baseline", unscored), "summary.json is missing", "mtl-eval")
    assert_bad_input(compare(mt, "--baseline", tmp_path / "nope"), "no such run directory")
    missing = run_dir(tmp_path, "nomacro", {"c": {"accuracy": 0.5}})
    assert_bad_input(compare(mt, "--baseline", missing), "has no 'macro_f1'")
    assert_bad_input(compare(mt), "--baseline")


def test_help_shows_examples():
    result = compare("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "delta-m" in result.output


def test_metrics_and_directions_come_from_the_summary_alone(tmp_path):
    """A task of a class no one can import, on a metric lower-is-better by its record."""
    record = {
        "w": {
            "primary_metric": "wer",
            "comparison_metrics": ["wer", "bleu"],
            "higher_is_better": {"wer": False, "bleu": True},
        }
    }
    mt = run_dir(tmp_path, "mt", {"w": {"wer": 0.2, "bleu": 30.0, "other": 1.0}}, record)
    st = run_dir(tmp_path, "st", {"w": {"wer": 0.25, "bleu": 20.0, "other": 9.0}}, record)
    (mt / "config.yaml").write_text(
        "model:\n  init_args:\n    tasks:\n      w: {class_path: nowhere.Missing}\n"
    )
    out = tmp_path / "gain.json"
    result = compare(mt, "--baseline", st, "--json", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["tasks"]["w"]["metrics"]
    assert set(metrics) == {"wer", "bleu"}  # only the recorded comparison metrics
    assert metrics["wer"]["lower_is_better"]
    assert not metrics["bleu"]["lower_is_better"]
    assert metrics["wer"]["delta_pct"] == pytest.approx(20.0)  # 0.25 -> 0.2 is a gain
    assert metrics["bleu"]["delta_pct"] == pytest.approx(50.0)
    assert "wer (lower better)" in result.stdout


def test_a_summary_without_metric_records_is_refused_clearly(tmp_path):
    """Run directories trained before the record existed: one paragraph, exit 2."""
    mt = run_dir(tmp_path, "mt", {"c": {"accuracy": 0.5, "macro_f1": 0.5}})
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("model: {}\n")
    (old / "summary.json").write_text(json.dumps({"c": {"accuracy": 0.5, "macro_f1": 0.5}}))
    assert_bad_input(
        compare(mt, "--baseline", old),
        f"{old / 'summary.json'}: task 'c' has no metric record",
        "higher_is_better",
        "file-formats.md",
    )
    broken = dict(RECORDS["c"], higher_is_better={"accuracy": True})  # macro_f1 missing
    bad = run_dir(tmp_path, "bad", {"c": {"accuracy": 0.5, "macro_f1": 0.5}}, {"c": broken})
    assert_bad_input(compare(mt, "--baseline", bad), "task 'c': malformed metric record")
