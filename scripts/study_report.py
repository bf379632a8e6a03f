"""``mtl-study report``: a study's runs, combination by combination, against its single-task runs.

Every figure comes from :mod:`scripts.compare`, the code behind ``mtl-compare``: a
combination's seeds are its multitask runs, the study's single-task runs (with the same
``set:`` values when the study has them, else all of them) its baselines. So a combination's
delta-m here is exactly what ``mtl-compare COMBINATION_RUNS --baseline SINGLE_RUNS`` prints.

With pair runs the report adds a task-affinity matrix: entry (i, j) is the gain (delta %, as
in ``mtl-compare``) of dataset i's tasks when trained with dataset j against dataset i alone.
The grouping it suggests merges, greedily, the two groups whose datasets help each other most
on average (the mean of both directions over every cross pair), while that mean is positive.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from compiler.errors import ConfigError
from compiler.files import atomic_file, atomic_write
from scripts.compare import RunFigures, compare, read_run, task_stats
from scripts.metrics_table import format_table, number
from scripts.study_state import RunState, Study, StudyRun, format_seconds, study_states

REPORT_FILES = ("report.md", "report.json", "report.csv")
AFFINITY_PNG = "affinity.png"


@dataclass
class _Combination:
    key: str
    group: list[str]
    kinds: list[str]
    values: dict[str, Any]
    runs: list[StudyRun]

    @property
    def label(self) -> str:
        return (
            self.runs[0].name.rsplit("__seed", 1)[0]
            if self.runs[0].seed is not None
            else self.runs[0].name
        )


def _combinations(study: Study) -> list[_Combination]:
    """Runs grouped by everything but the seed."""
    out: dict[str, _Combination] = {}
    for run in study.runs:
        key = json.dumps([sorted(run.group), run.values], sort_keys=True)
        combo = out.setdefault(key, _Combination(key, run.group, run.kinds, run.values, []))
        combo.runs.append(run)
    return list(out.values())


def _values_key(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)


def _baselines(
    combos: list[_Combination], figures: dict[str, RunFigures], values: dict[str, Any]
) -> tuple[list[RunFigures], bool]:
    """Finished single-task runs with the same set: values (else all of them; flag False)."""
    singles = [c for c in combos if len(c.group) == 1]
    matched = [
        figures[r.name]
        for c in singles
        if _values_key(c.values) == _values_key(values)
        for r in c.runs
        if r.name in figures
    ]
    if matched:
        return matched, True
    return [figures[r.name] for c in singles for r in c.runs if r.name in figures], False


def build_report(study: Study) -> dict[str, Any]:
    """Every number of the report (what report.json holds)."""
    states = {st.run.name: st for st in study_states(study)}
    figures = {name: read_run(st.run.run_dir) for name, st in states.items() if st.state == "done"}
    if not figures:
        counts = _counts(list(states.values()))
        raise ConfigError(
            f"{study.folder}: no run has finished yet ({counts}); run "
            f"mtl-study run {study.folder} first"
        )
    combos = _combinations(study)
    entries = []
    for combo in combos:
        done = [figures[r.name] for r in combo.runs if r.name in figures]
        missing = {r.name: states[r.name].state for r in combo.runs if r.name not in figures}
        entry: dict[str, Any] = {
            "combination": combo.label,
            "group": combo.group,
            "kinds": combo.kinds,
            "set": combo.values,
            "runs": [r.name for r in combo.runs],
            "finished": len(done),
            "missing": missing,
            "tasks": {},
            "delta_m_pct": None,
            "baseline_runs": [],
            "baselines_match_set": None,
        }
        entries.append(entry)
        if not done:
            continue
        baseline, matched = _baselines(combos, figures, combo.values)
        comparison = None
        if baseline and len(combo.group) > 1:
            try:
                comparison = compare(done, baseline)
            except ConfigError:
                comparison = None  # no task of this combination has a baseline
        for task in dict.fromkeys(t for run in done for t in run.summary):
            primary = done[0].primary[task]
            metric = primary.metrics[0]
            stats = task_stats(done, task, metric)
            gain = comparison["tasks"].get(task, {}).get("delta_pct") if comparison else None
            entry["tasks"][task] = {
                "metric": metric,
                "lower_is_better": primary.sign(metric) < 0,
                **stats,
                "delta_pct": gain,
            }
        if comparison is not None:
            entry["delta_m_pct"] = comparison["delta_m_pct"]
            entry["baseline_runs"] = [Path(p).name for p in comparison["baseline_runs"]]
            entry["baselines_match_set"] = matched
            entry["skipped"] = comparison["skipped"]
    report: dict[str, Any] = {
        "study": study.name,
        "combinations": entries,
        "best_per_task": _best_per_task(entries),
        "best_overall": _best_overall(entries),
        "runs": [_run_row(st) for st in states.values()],
        "not_finished": {n: st.state for n, st in states.items() if st.state != "done"},
    }
    report["affinity"] = _affinity(study, combos, figures)
    return report


def _counts(states: list[RunState]) -> str:
    counts: dict[str, int] = {}
    for st in states:
        counts[st.state] = counts.get(st.state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _run_row(st: RunState) -> dict[str, Any]:
    return {
        "name": st.run.name,
        "state": st.state,
        "wall_s": st.elapsed,
        "attempts": st.record.get("attempts"),
        "exit_code": st.record.get("exit_code"),
        "run_dir": str(st.run.run_dir),
    }


def _best_per_task(entries: list[dict[str, Any]]) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for entry in entries:
        for task, fig in entry["tasks"].items():
            sign = -1 if fig["lower_is_better"] else 1
            current = best.get(task)
            if current is None or sign * fig["mean"] > sign * current["mean"]:
                best[task] = {
                    "combination": entry["combination"],
                    "metric": fig["metric"],
                    "mean": fig["mean"],
                    "std": fig["std"],
                }
    return best


def _best_overall(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [e for e in entries if e["delta_m_pct"] is not None]
    if not scored:
        return None
    top = max(scored, key=lambda e: e["delta_m_pct"]["mean"])
    return {"combination": top["combination"], "delta_m_pct": top["delta_m_pct"]}


def _affinity(
    study: Study, combos: list[_Combination], figures: dict[str, RunFigures]
) -> list[dict[str, Any]]:
    """One matrix per set: values with pair runs: gain of dataset i's tasks when paired with j."""
    datasets = list(study.manifest.get("datasets") or {})
    by_values: dict[str, list[_Combination]] = {}
    for combo in combos:
        by_values.setdefault(_values_key(combo.values), []).append(combo)
    out = []
    for group in by_values.values():
        pairs = [c for c in group if len(c.group) == 2]
        singles = {
            c.group[0]: [figures[r.name] for r in c.runs if r.name in figures]
            for c in group
            if len(c.group) == 1
        }
        if not pairs or not singles:
            continue
        matrix: list[list[float | None]] = [[None] * len(datasets) for _ in datasets]
        for combo in pairs:
            done = [figures[r.name] for r in combo.runs if r.name in figures]
            if not done:
                continue
            for i_name, j_name in (combo.group, combo.group[::-1]):
                base = singles.get(i_name) or []
                tasks = set((study.manifest.get("datasets") or {}).get(i_name) or [])
                if not base or i_name not in datasets or j_name not in datasets:
                    continue
                gains = [
                    t["delta_pct"]
                    for name, t in compare(done, base)["tasks"].items()
                    if name in tasks
                ]
                if gains:
                    matrix[datasets.index(i_name)][datasets.index(j_name)] = statistics.fmean(gains)
        out.append(
            {
                "set": group[0].values,
                "datasets": datasets,
                "matrix": matrix,
                "suggested_groups": suggest_groups(datasets, matrix),
            }
        )
    return out


def suggest_groups(names: list[str], matrix: list[list[float | None]]) -> list[list[str]]:
    """Greedy average-linkage merging on mutual gains while the best merge helps (> 0)."""

    def mutual(i: int, j: int) -> float | None:
        a, b = matrix[i][j], matrix[j][i]
        return None if a is None or b is None else (a + b) / 2

    groups = [[i] for i in range(len(names))]
    while True:
        best: tuple[float, int, int] | None = None
        for x in range(len(groups)):
            for y in range(x + 1, len(groups)):
                scores = [mutual(i, j) for i in groups[x] for j in groups[y]]
                if any(s is None for s in scores):
                    continue
                score = statistics.fmean(scores)  # type: ignore[arg-type]
                if score > 0 and (best is None or score > best[0]):
                    best = (score, x, y)
        if best is None:
            return [[names[i] for i in g] for g in groups]
        _, x, y = best
        groups[x] = sorted(groups[x] + groups[y])
        del groups[y]


def _cell(fig: dict[str, Any]) -> str:
    text = number(fig["mean"])
    return text + (f" ± {number(fig['std'])}" if fig["std"] is not None else "")


def _delta(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    spread = f" ± {stats['std']:.2f}" if stats["std"] is not None else ""
    return f"{stats['mean']:+.2f}{spread}"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one row per combination, one column per task, then delta-m."""
    tasks = list(dict.fromkeys(t for e in report["combinations"] for t in e["tasks"]))
    metric = {
        t: next(e["tasks"][t]["metric"] for e in report["combinations"] if t in e["tasks"])
        for t in tasks
    }
    header = ["combination", "runs", *(f"{t} {metric[t]}" for t in tasks), "delta-m %"]
    rows = []
    for e in report["combinations"]:
        baseline = len(e["group"]) == 1
        rows.append(
            [
                e["combination"],
                f"{e['finished']}/{len(e['runs'])}",
                *(_cell(e["tasks"][t]) if t in e["tasks"] else "" for t in tasks),
                "baseline" if baseline else _delta(e["delta_m_pct"]),
            ]
        )
    return header, rows


def render_text(report: dict[str, Any]) -> str:
    header, rows = table_rows(report)
    lines = [
        f"Study {report['study']}: primary metric, mean ± std over seeds (validation, best "
        "checkpoint); delta-m against the single-task runs (mtl-compare's)",
        "",
        format_table(header, rows, left=1),
    ]
    lines += ["", *_summary_lines(report)]
    return "\n".join(lines)


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for task, best in report["best_per_task"].items():
        lines.append(f"best for {task}: {best['combination']} ({best['metric']} {_cell(best)})")
    overall = report["best_overall"]
    if overall:
        lines.append(
            f"best overall (delta-m): {overall['combination']} ({_delta(overall['delta_m_pct'])}%)"
        )
    for aff in report["affinity"]:
        groups = " | ".join(", ".join(g) for g in aff["suggested_groups"])
        lines.append(f"suggested grouping{_set_text(aff['set'])}: {groups}")
    by_state: dict[str, list[str]] = {}
    for name, state in report["not_finished"].items():
        by_state.setdefault(state, []).append(name)
    for state, names in by_state.items():
        lines.append(f"not finished, {state} ({len(names)}): {', '.join(names)}")
    return lines


def _set_text(values: dict[str, Any]) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in values.items())})" if values else ""


def render_markdown(report: dict[str, Any], images: list[str]) -> str:
    header, rows = table_rows(report)

    def md(head: list[str], body: list[list[str]]) -> list[str]:
        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in body),
        ]

    out = [
        f"# Study {report['study']}",
        "",
        "Primary metric per task, mean ± std over seeds (validation, best checkpoint); "
        "delta-m (%) against the study's single-task runs, computed as by mtl-compare.",
        "",
        *md(header, rows),
        "",
        *(f"- {line}" for line in _summary_lines(report)),
    ]
    for aff, image in zip(report["affinity"], images, strict=False):
        names = aff["datasets"]
        body = [
            [names[i], *("" if v is None else f"{v:+.2f}" for v in row)]
            for i, row in enumerate(aff["matrix"])
        ]
        out += [
            "",
            f"## Task affinity{_set_text(aff['set'])}",
            "",
            "Gain (%) of the row's tasks when trained with the column's dataset, against "
            "the row alone.",
            "",
            *md(["task \\ with", *names], body),
            "",
            f"![task affinity]({image})",
        ]
    runs = [
        [r["name"], r["state"], format_seconds(r["wall_s"]), str(r["attempts"] or "-")]
        for r in report["runs"]
    ]
    out += ["", "## Runs", "", *md(["run", "state", "wall time", "attempts"], runs)]
    return "\n".join(out) + "\n"


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "combination",
            "group",
            "set",
            "finished",
            "runs",
            "task",
            "metric",
            "mean",
            "std",
            "n",
            "task_delta_pct",
            "delta_m_pct",
            "delta_m_std",
        ]
    )
    for e in report["combinations"]:
        dm = e["delta_m_pct"] or {}
        for task, fig in (e["tasks"] or {"": None}).items():
            fig = fig or {}
            writer.writerow(
                [
                    e["combination"],
                    "+".join(e["group"]),
                    json.dumps(e["set"]),
                    e["finished"],
                    len(e["runs"]),
                    task,
                    fig.get("metric", ""),
                    fig.get("mean", ""),
                    _blank(fig.get("std")),
                    fig.get("n", ""),
                    _blank(fig.get("delta_pct")),
                    _blank(dm.get("mean")),
                    _blank(dm.get("std")),
                ]
            )
    return buffer.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def draw_affinity(aff: dict[str, Any], path: Path | IO[bytes]) -> None:
    """The affinity matrix as a heatmap (red: the partner hurts, blue: it helps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = aff["datasets"]
    values = [[float("nan") if v is None else v for v in row] for row in aff["matrix"]]
    finite = [abs(v) for row in values for v in row if v == v]
    bound = max(finite, default=1.0) or 1.0
    size = 1.2 + 0.9 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(values, cmap="RdBu", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("trained together with")
    ax.set_ylabel("task(s) measured")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v == v:
                ax.text(
                    j,
                    i,
                    f"{v:+.1f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if abs(v) > 0.6 * bound else "black",
                )
    fig.colorbar(image, ax=ax, label="gain vs alone (%)")
    ax.set_title(f"Task affinity{_set_text(aff['set'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_report(study: Study, report: dict[str, Any]) -> list[Path]:
    """report.md, report.json, report.csv and the affinity heatmaps, each written atomically."""
    written = []
    images = []
    for index, aff in enumerate(report["affinity"]):
        name = AFFINITY_PNG if index == 0 else f"affinity-{index}.png"
        with atomic_file(study.folder / name) as handle:
            draw_affinity(aff, handle)
        aff["image"] = name
        images.append(name)
        written.append(study.folder / name)
    texts = {
        "report.json": json.dumps(report, indent=2) + "\n",
        "report.csv": render_csv(report),
        "report.md": render_markdown(report, images),
    }
    for name, text in texts.items():
        atomic_write(study.folder / name, text)
        written.append(study.folder / name)
    return written
