"""mtl-eval: per-task metrics of run directories, equal for a merged run and its unmerged
parts, and equal to what training reported for the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_bad_input
from merged_runs import LAYOUT, fake_run, merged_config
from toy_run_dir import train_toy_run

from runtime.metric_record import RECORD_KEYS
from scripts.evaluate import main
from scripts.unmerge import main as unmerge_main

TASKS = [t for tasks in LAYOUT.values() for t in tasks]


def evaluate(*args: object):
    """mtl-eval on CPU, as the runs were trained (GPU runs: tests/test_gpu.py)."""
    return CliRunner().invoke(
        main, [*(str(a) for a in args), "--device", "cpu"], catch_exceptions=True
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("eval"), merged_config(max_epochs=2))


def _report(run_dir: Path, tmp: Path, *args: object) -> dict:
    out = tmp / f"{run_dir.name}-{len(list(tmp.glob('*.json')))}.json"
    result = evaluate(run_dir, "--json", out, *args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for metric, value in a.items():
        assert b[metric] == pytest.approx(value, rel=1e-5, abs=1e-6), metric


def test_eval_reports_what_training_reported_for_the_best_checkpoint(trained, tmp_path):
    result = evaluate(trained)
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split() == ["task", "accuracy", "macro_f1", "loss"]
    assert [line.split()[0] for line in table[2:5]] == TASKS
    report = _report(trained, tmp_path)
    summary = json.loads((trained / "summary.json").read_text())
    for task in TASKS:
        assert {"accuracy", "macro_f1", "loss", "f1_c0"} <= set(report[task])
        figures = {k: v for k, v in summary[task].items() if k not in ("epoch", "step")}
        _assert_same(report[task], {k: v for k, v in figures.items() if k not in RECORD_KEYS})


def test_merged_run_and_its_unmerged_parts_give_identical_figures(trained, tmp_path):
    out = tmp_path / "parts"
    result = CliRunner().invoke(unmerge_main, [str(trained), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for split in ("val", "test"):
        merged = _report(trained, tmp_path, "--split", split)
        for task in TASKS:
            part = _report(out / task, tmp_path, "--split", split)
            assert list(part) == [task]
            _assert_same(merged[task], part[task])


def test_per_position_merged_and_unmerged_figures_match(tmp_path):
    run_dir = fake_run(tmp_path / "seg", merged_config("segmentation"))
    assert CliRunner().invoke(unmerge_main, [str(run_dir)]).exit_code == 0
    merged = _report(run_dir, tmp_path, "--ckpt", "last")
    for task in TASKS:
        _assert_same(merged[task], _report(run_dir / "unmerged" / task, tmp_path)[task])


def test_single_task_run_without_merged_heads(tmp_path):
    run_dir = fake_run(tmp_path / "plain", merged_config("regression", merged=False))
    report = _report(run_dir, tmp_path, "--ckpt", run_dir / "checkpoints" / "last.ckpt")
    assert set(report) == set(TASKS)
    assert {"mae", "rmse", "loss"} == set(report["tc"])


def test_bad_input_exits_2(tmp_path, trained):
    assert_bad_input(evaluate(tmp_path / "nope"), "no such run directory")
    run_dir = fake_run(tmp_path / "run", merged_config())
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(b"\x00garbage")
    assert_bad_input(evaluate(run_dir), "best.ckpt: not a loadable checkpoint")
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    assert_bad_input(evaluate(run_dir, "--ckpt", "last"), "no last checkpoint")
    assert_bad_input(evaluate(trained, "--split", "train"), "")
    assert not list(tmp_path.glob("*.json"))


def test_help_shows_examples():
    result = evaluate("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "--split" in result.output
