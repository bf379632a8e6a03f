"""mtl-study report on hand-made run directories: affinity, grouping, best, missing runs."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from click.testing import CliRunner

from scripts.study import main as study_main
from scripts.study_report import suggest_groups

CLS = {"class_path": "runtime.tasks.ClassificationTask"}
#: what mtl-run records beside a classification task's figures (runtime.metric_record)
RECORD = {
    "primary_metric": "accuracy",
    "comparison_metrics": ["accuracy", "macro_f1"],
    "higher_is_better": {"accuracy": True, "macro_f1": True},
}


def make_study(root, figures: dict[str, dict[str, float]], missing: tuple[str, ...] = ()):
    """A study of datasets a, b, c (one task each); ``figures``: run -> task -> accuracy."""
    runs = []
    for name in [*figures, *missing]:
        group = name.split("+") if name != "all" else ["a", "b", "c"]
        runs.append(
            {
                "name": name,
                "group": group,
                "kinds": [],
                "tasks": group,
                "set": {},
                "seed": None,
                "config": f"configs/{name}.yaml",
                "run_dir": f"runs/{name}",
            }
        )
    (root / "study.yaml").write_text(
        yaml.safe_dump(
            {"study": "hand", "datasets": {"a": ["a"], "b": ["b"], "c": ["c"]}, "runs": runs}
        )
    )
    for name, tasks in figures.items():
        run_dir = root / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump({"model": {"init_args": {"tasks": dict.fromkeys(tasks, CLS)}}})
        )
        (run_dir / "summary.json").write_text(
            json.dumps(
                {t: {"accuracy": v, "macro_f1": v, "loss": 0.1, **RECORD} for t, v in tasks.items()}
            )
        )
    return root


def test_affinity_grouping_best_and_missing_runs(tmp_path):
    study = make_study(
        tmp_path,
        {
            "a": {"a": 0.8},
            "b": {"b": 0.5},
            "c": {"c": 0.9},
            "a+b": {"a": 0.88, "b": 0.55},  # both +10 %
            "a+c": {"a": 0.72, "c": 0.9},  # a -10 %, c 0 %
            "b+c": {"b": 0.5, "c": 0.99},  # b 0 %, c +10 %
        },
        missing=("all",),
    )
    result = CliRunner().invoke(study_main, ["report", str(study)])
    assert result.exit_code == 0, result.output
    report = json.loads((study / "report.json").read_text())
    (aff,) = report["affinity"]
    assert aff["datasets"] == ["a", "b", "c"]
    expected = [[None, 10.0, -10.0], [10.0, None, 0.0], [0.0, 10.0, None]]
    for row, want in zip(aff["matrix"], expected, strict=True):
        assert row == [None if w is None else pytest.approx(w) for w in want]
    assert aff["suggested_groups"] == [["a", "b"], ["c"]]
    assert (study / "affinity.png").read_bytes().startswith(b"\x89PNG")
    assert report["best_per_task"]["a"]["combination"] == "a+b"
    assert report["best_per_task"]["c"]["combination"] == "b+c"
    assert report["best_overall"]["combination"] == "a+b"
    assert report["best_overall"]["delta_m_pct"]["mean"] == pytest.approx(10.0)
    assert report["not_finished"] == {"all": "queued"}
    assert "not finished, queued (1): all" in result.output
    assert "suggested grouping: a, b | c" in result.output
    rows = list(csv.DictReader((study / "report.csv").open()))
    ab = [r for r in rows if r["combination"] == "a+b"]
    assert {r["task"] for r in ab} == {"a", "b"}
    assert float(ab[0]["delta_m_pct"]) == pytest.approx(10.0)
    assert any(r["combination"] == "all" and r["finished"] == "0" for r in rows)
    md = (study / "report.md").read_text()
    assert "![task affinity](affinity.png)" in md
    assert "| a+b | 1/1 |" in md


def test_grouping_needs_mutual_gain():
    names = ["a", "b", "c", "d"]
    m = [
        [None, 4.0, -1.0, -2.0],
        [2.0, None, -3.0, -1.0],
        [-1.0, -2.0, None, 1.0],
        [-2.0, -1.0, 3.0, None],
    ]
    assert suggest_groups(names, m) == [["a", "b"], ["c", "d"]]
    assert suggest_groups(names[:2], [[None, -1.0], [2.0, None]]) == [["a", "b"]]
    assert suggest_groups(names[:2], [[None, -3.0], [2.0, None]]) == [["a"], ["b"]]
