"""``mtl-compare``: multitask runs against single-task baselines, and the multitask gain.

Figures come from each run directory's ``summary.json`` (the validation metrics of its best
checkpoint). The gain is delta-m (Maninis et al. 2019; Vandenhende et al. 2021):

    delta_m = 100 * mean over tasks t of  mean over primary metrics m of
              (-1)^s_m * (M_multitask[t, m] - M_single[t, m]) / M_single[t, m]

with s_m = 1 where lower is better, so a positive delta-m means multitask training helped. Which
metrics a task is compared on and which way each is better is read from the metric record
``mtl-run fit`` writes beside the figures (``runtime.metric_record``), never from task classes;
for the built-in tasks: classification and per-position classification: accuracy and macro_f1;
multi-label: macro_f1; regression: mae and rmse, lower is better. Several runs per side
(seeds) are averaged; standard deviations are sample ones (n - 1). delta-m's deviation is over
the multitask runs, each measured against the mean baseline.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError
from compiler.files import check_output
from runtime.metric_record import MetricRecord, figures, scored
from runtime.rundir import RunDir
from scripts.common import bad_input_exits, json_option, write_json_result
from scripts.metrics_table import format_table, number

PROG = "mtl-compare"

EXAMPLES = """\b
Examples:
  mtl-compare runs/quickstart --baseline runs/digits_low runs/digits_high runs/parity
  mtl-compare runs/mt-seed0 runs/mt-seed1 --baseline runs/st-*/ --json gain.json
"""


@dataclass
class RunFigures:
    run_dir: Path
    summary: dict[str, dict[str, Any]]
    #: per task: its comparison metrics and their directions (summary.json's record)
    primary: dict[str, MetricRecord]
    #: how the run balanced its tasks (``balancer_label`` of run_info.json's record)
    balancer: str = "sum"


def balancer_label(record: Any) -> str:
    """A short name for the balancer block run_info.json recorded: ``sum`` (none),
    ``Uncertainty``, ``Aggregate(UPGrad)``."""
    if not isinstance(record, dict):
        return "sum"
    name = str(record.get("class_path", "?")).rpartition(".")[2]
    inner = (record.get("init_args") or {}).get("aggregator") or {}
    inner_path = inner.get("class_path") if isinstance(inner, dict) else None
    return f"{name}({str(inner_path).rpartition('.')[2]})" if inner_path else name


def _balancer(run_dir: Path) -> str:
    """The balancer a run recorded in run_info.json (``sum`` when none or not recorded)."""
    return balancer_label(RunDir(run_dir).read_run_info().get("balancer"))


def read_run(run_dir: Path) -> RunFigures:
    """A run directory's best-checkpoint validation figures and its tasks' metric records,
    all from its summary.json."""
    from runtime.rundir import config_of

    _, found = config_of(run_dir)
    if found is None:
        raise ConfigError(f"{run_dir} is not a run directory (give the folder, not a file)")
    path = found.summary
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is missing: only runs trained by mtl-run fit have one "
            "(score other run directories with mtl-eval)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(summary, dict) or not all(isinstance(v, dict) for v in summary.values()):
        raise ConfigError(f"{path}: expected {{task: {{metric: value}}}}")
    # a task without validation labels has its metrics written as null (absent): not scored
    primary = {t: MetricRecord.from_entry(m, path, t) for t, m in summary.items() if scored(m)}
    summary = {t: figures(summary[t]) for t in primary}
    return RunFigures(run_dir, summary, primary, _balancer(run_dir))


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def _values(runs: list[RunFigures], task: str, metric: str) -> list[float]:
    out = []
    for run in runs:
        if task not in run.summary:
            continue
        value = run.summary[task].get(metric)
        if not isinstance(value, (int, float)):
            raise ConfigError(
                f"{RunDir(run.run_dir).summary}: task '{task}' has no "
                f"'{metric}' (one of the comparison_metrics its record lists)"
            )
        out.append(float(value))
    return out


def task_stats(runs: list[RunFigures], task: str, metric: str) -> dict[str, Any]:
    """Mean, sample std and count of one task's metric over runs (seeds), as in compare."""
    return _stats(_values(runs, task, metric))


def compare(multitask: list[RunFigures], baseline: list[RunFigures]) -> dict[str, Any]:
    """Per-task figures of both sides, per-task gains and delta-m (all in percent)."""
    tasks = list(dict.fromkeys(t for run in multitask for t in run.summary))
    covered = {t for run in baseline for t in run.summary}
    skipped: dict[str, str] = {}
    result: dict[str, Any] = {}
    per_run: list[list[float]] = [[] for _ in multitask]
    for task in tasks:
        if task not in covered:
            skipped[task] = "no baseline run has it"
            continue
        if any(task not in run.summary for run in multitask):
            skipped[task] = "not in every multitask run"
            continue
        primary = next(run.primary[task] for run in multitask)
        metrics: dict[str, Any] = {}
        run_gains = [0.0] * len(multitask)
        for metric in primary.metrics:
            mt = task_stats(multitask, task, metric)
            st = task_stats(baseline, task, metric)
            if st["mean"] == 0:
                raise ConfigError(
                    f"task '{task}': the single-task baseline's {metric} is 0, so "
                    "the relative gain is undefined"
                )
            sign = primary.sign(metric)
            metrics[metric] = {
                "lower_is_better": sign < 0,
                "multitask": mt,
                "single_task": st,
                "delta_pct": 100 * sign * (mt["mean"] - st["mean"]) / st["mean"],
            }
            for i, value in enumerate(_values(multitask, task, metric)):
                run_gains[i] += 100 * sign * (value - st["mean"]) / st["mean"]
        for i, gain in enumerate(run_gains):
            per_run[i].append(gain / len(primary.metrics))
        result[task] = {
            "metrics": metrics,
            "delta_pct": statistics.fmean(m["delta_pct"] for m in metrics.values()),
        }
    if not result:
        raise ConfigError(
            "no task is in both the multitask and the baseline runs (multitask: "
            f"{', '.join(tasks)}; baselines: {', '.join(sorted(covered))})"
        )
    return {
        "delta_m_pct": _stats([statistics.fmean(gains) for gains in per_run]),
        "tasks": result,
        "skipped": skipped,
        "balancers": list(dict.fromkeys(r.balancer for r in multitask)),
        "multitask_runs": [str(r.run_dir) for r in multitask],
        "baseline_runs": [str(r.run_dir) for r in baseline],
    }


def _cell(stats: dict[str, Any]) -> str:
    text = number(stats["mean"])
    if stats["std"] is not None:
        text += f" ± {number(stats['std'])}"
    return text + (f" (n={stats['n']})" if stats["n"] > 1 else "")


def render(report: dict[str, Any]) -> str:
    rows = []
    for task, entry in report["tasks"].items():
        for i, (metric, m) in enumerate(entry["metrics"].items()):
            arrow = " (lower better)" if m["lower_is_better"] else ""
            rows.append(
                [
                    task if i == 0 else "",
                    metric + arrow,
                    _cell(m["multitask"]),
                    _cell(m["single_task"]),
                    f"{m['delta_pct']:+.2f}",
                ]
            )
        rows.append(["", "task gain", "", "", f"{entry['delta_pct']:+.2f}"])
    lines = [
        f"multitask balancer: {', '.join(report.get('balancers') or ['sum'])}",
        format_table(["task", "metric", "multitask", "single-task", "delta %"], rows, left=2),
    ]
    dm = report["delta_m_pct"]
    spread = f" ± {dm['std']:.2f}" if dm["std"] is not None else ""
    lines.append(
        f"\ndelta-m = {dm['mean']:+.2f}%{spread} over {len(report['tasks'])} tasks "
        f"({dm['n']} multitask run{'s' if dm['n'] > 1 else ''}; positive: multitask "
        "helped)"
    )
    for task, reason in report["skipped"].items():
        lines.append(f"skipped {task}: {reason}")
    return "\n".join(lines)


def split_baselines(args: list[str]) -> list[str]:
    """``--baseline A B C`` -> ``--baseline A --baseline B --baseline C`` (a click option
    takes one value per use)."""
    out: list[str] = []
    in_baselines = False
    for arg in args:
        if arg == "--baseline":
            in_baselines = True
            continue
        if arg.startswith("-"):
            in_baselines = False
        out += ["--baseline", arg] if in_baselines else [arg]
    return out


class _BaselinesCommand(click.Command):
    """Lets ``--baseline`` take several run directories, like the positional arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, split_baselines(args))


@click.command(
    cls=_BaselinesCommand,
    context_settings=CONTEXT_SETTINGS,
    epilog=EXAMPLES,
)
@version_option("mtl-compare")
@click.argument(
    "multitask_run_dirs",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
    metavar="MULTITASK_RUN_DIR...",
)
@click.option(
    "--baseline",
    "baseline_dirs",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    metavar="SINGLE_TASK_RUN_DIR...",
    help="Single-task run directories (each covering one or more tasks); all "
    "arguments after --baseline up to the next option are baselines.",
)
@json_option("Also write the full comparison as JSON.")
def main(
    multitask_run_dirs: tuple[Path, ...], baseline_dirs: tuple[Path, ...], json_path: Path | None
) -> None:
    """Per-task metrics of multitask runs beside single-task baselines, and delta-m (%).

    Figures are each run's summary.json (validation, best checkpoint). Tasks are compared on
    the metrics and directions recorded there (classification and per-position
    classification: accuracy and macro_f1; multi-label: macro_f1; regression: mae and rmse,
    lower better); a multitask task without a baseline is reported as skipped and left out
    of delta-m.
    """
    with bad_input_exits(PROG):
        if json_path is not None:
            check_output(json_path, flag="--json")
        report = compare(
            [read_run(p) for p in multitask_run_dirs], [read_run(p) for p in baseline_dirs]
        )
        click.echo(render(report))
        if json_path is not None:
            write_json_result(PROG, json_path, report)


if __name__ == "__main__":
    main()
