"""``mtl-study``: launch a study's runs (here or on SLURM), follow them, and report them.

A study folder comes from ``mtl-make-config MAKER --sweep -o studies/NAME``; every run in it
is an ordinary ``mtl-run`` run directory under ``studies/NAME/runs/``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from compiler import __version__
from compiler.errors import ConfigError
from scripts.common import FiniteFloat, bad_input_exits, note
from scripts.study_state import STATES, RunState, Study, format_seconds, load_study, study_states

PROG = "mtl-study"
EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    context_settings=_SETTINGS,
    epilog="""\b
Examples:
  mtl-make-config maker_configs/study_digits.yaml --sweep -o studies/digits
  mtl-study run studies/digits --max-parallel 2
  mtl-study status studies/digits
  mtl-study report studies/digits
  mtl-study run studies/digits --launcher slurm --partition gpu --gpus-per-run 1 --dry-run
""",
)
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
def main() -> None:
    """Launch, follow and report a study (a folder written by mtl-make-config --sweep)."""


def _study_arg(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("study", type=click.Path(path_type=Path), metavar="STUDY")(func)


def _only_opt(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--only",
        "only",
        multiple=True,
        metavar="PATTERN",
        help="Only runs whose name matches PATTERN: a run name, or a glob such as "
        "'*seed0' or 'digits_low*'. Repeatable.",
    )(func)


def status_rows(states: list[RunState], folder: Path) -> list[list[str]]:
    rows = []
    for st in states:
        code = st.record.get("exit_code")
        rows.append(
            [
                st.run.name,
                st.state,
                format_seconds(st.elapsed),
                str(st.record.get("attempts") or "-"),
                "-" if code is None else str(code),
            ]
        )
    return rows


STATUS_HEADER = ["run", "state", "elapsed", "attempts", "exit"]


def status_text(states: list[RunState], folder: Path) -> str:
    from scripts.metrics_table import format_table

    counts = {s: sum(st.state == s for st in states) for s in STATES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return (
        format_table(STATUS_HEADER, status_rows(states, folder), left=2)
        + f"\n{len(states)} runs: {summary}"
    )


def _rich_table(states: list[RunState], folder: Path) -> Any:  # rich is optional
    from rich.table import Table

    colors = {"done": "green", "failed": "red", "running": "cyan", "interrupted": "yellow"}
    table = Table(title=f"study {folder}")
    for name in STATUS_HEADER:
        table.add_column(name, no_wrap=True)
    for row in status_rows(states, folder):
        color = colors.get(row[1])
        row[1] = f"[{color}]{row[1]}[/{color}]" if color else row[1]
        table.add_row(*row)
    return table


@main.command(context_settings=_SETTINGS)
@_study_arg
@_only_opt
def status(study: Path, only: tuple[str, ...]) -> None:
    """Print where every run of STUDY stands (queued, running, interrupted, done, failed)."""
    with bad_input_exits(PROG):
        loaded = load_study(study)
        click.echo(status_text(study_states(loaded, loaded.select(only)), loaded.folder))


@main.command(context_settings=_SETTINGS)
@_study_arg
@_only_opt
@click.option(
    "--launcher",
    type=click.Choice(["local", "slurm"]),
    default="local",
    show_default=True,
    help="local: mtl-run children on this machine; slurm: one SLURM job array through submitit.",
)
@click.option("--retry-failed", is_flag=True, help="Also run again the runs that failed.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what would be launched (for slurm: the sbatch script) and launch nothing.",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="local: runs at once.",
)
@click.option(
    "--gpus",
    metavar="IDS",
    help="local: GPU ids to share out, one per running run (CUDA_VISIBLE_DEVICES), e.g. "
    "0,1,2,3; --max-parallel then defaults to their number.",
)
@click.option(
    "--threads-per-run",
    type=click.IntRange(min=1),
    metavar="N",
    help="local: CPU threads per run (default: the CPUs divided by --max-parallel).",
)
@click.option("--partition", help="slurm: partition.")
@click.option("--account", help="slurm: account.")
@click.option(
    "--gpus-per-run",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="slurm: GPUs per run.",
)
@click.option(
    "--cpus-per-run",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="slurm: CPUs per run.",
)
@click.option(
    "--mem-gb", type=FiniteFloat(min=0, min_open=True), help="slurm: memory per run (GB)."
)
@click.option(
    "--time",
    "time_min",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    metavar="MINUTES",
    help="slurm: time limit per run; a run that hits it is requeued and continues with --resume.",
)
@click.option(
    "--array-parallelism",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="slurm: most array tasks running at once.",
)
@click.option(
    "--max-requeues",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="slurm: how many time-limit requeues a run gets.",
)
@click.option(
    "--setup",
    multiple=True,
    metavar="CMD",
    help="slurm: a shell line run before each task (e.g. module load ...).",
)
@click.option("--wait", is_flag=True, help="slurm: wait for the array and show its progress.")
@click.option(
    "--cluster",
    type=click.Choice(["slurm", "local", "debug"]),
    default="slurm",
    hidden=True,
    help="submitit executor for --launcher slurm (local: tests).",
)
def run(
    study: Path,
    only: tuple[str, ...],
    launcher: str,
    retry_failed: bool,
    dry_run: bool,
    max_parallel: int,
    gpus: str | None,
    threads_per_run: int | None,
    partition: str | None,
    account: str | None,
    gpus_per_run: int,
    cpus_per_run: int,
    mem_gb: float | None,
    time_min: int,
    array_parallelism: int,
    max_requeues: int,
    setup: tuple[str, ...],
    wait: bool,
    cluster: str,
) -> None:
    """Train every run of STUDY that is not finished.

    Finished runs are skipped, interrupted ones resume from their newest checkpoint
    (mtl-run fit --resume), failed ones are left alone unless --retry-failed. Each run logs
    to STUDY/logs/<run>.log. Ctrl-C stops the running children cleanly; run the command again
    to continue. Exit code: 0 when every selected run is done, 1 when some failed, 130 when
    interrupted, 2 for bad input.
    """
    from scripts.study_launch import runs_to_launch

    with bad_input_exits(PROG):
        _check_launcher_options(click.get_current_context(), launcher)
        loaded = load_study(study)
        selected = loaded.select(only)
        gpu_ids = _gpu_ids(gpus) if gpus else []
        if launcher == "local" and max_parallel == 1 and len(gpu_ids) > 1:
            max_parallel = len(gpu_ids)
        states = study_states(loaded, selected)
        todo, skipped = runs_to_launch(states, retry_failed)
        for name, why in skipped.items():
            note(PROG, f"{name}: skipped, {why}")
        if launcher == "slurm":
            code = _run_slurm(
                loaded,
                todo,
                dry_run,
                wait,
                cluster,
                partition,
                account,
                gpus_per_run,
                cpus_per_run,
                mem_gb,
                time_min,
                array_parallelism,
                max_requeues,
                setup,
            )
        else:
            code = _run_local(
                loaded, selected, todo, dry_run, max_parallel, gpu_ids, threads_per_run
            )
        failed = [st.run.name for st in study_states(loaded, selected) if st.state == "failed"]
    if code == 0 and failed and not dry_run:
        note(
            PROG,
            f"{len(failed)} run(s) failed: {', '.join(failed)} (logs in "
            f"{loaded.folder / 'logs'}; --retry-failed runs them again)",
        )
        code = EXIT_FAILED_RUNS
    sys.exit(code)


_LOCAL_ONLY = ("max_parallel", "gpus", "threads_per_run")
_SLURM_ONLY = (
    "partition",
    "account",
    "gpus_per_run",
    "cpus_per_run",
    "mem_gb",
    "time_min",
    "array_parallelism",
    "max_requeues",
    "setup",
    "wait",
    "cluster",
)


def _check_launcher_options(ctx: click.Context, launcher: str) -> None:
    """Refuse options of the other launcher instead of ignoring them silently."""
    from click.core import ParameterSource

    foreign = _SLURM_ONLY if launcher == "local" else _LOCAL_ONLY
    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name in foreign and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not an option of --launcher {launcher} (see "
            "mtl-study run -h: each option says which launcher it is for)"
        )


def _gpu_ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",")]
    if not all(ids) or len(set(ids)) < len(ids):
        raise ConfigError(f"--gpus '{text}': give distinct GPU ids separated by commas, e.g. 0,1")
    return ids


def _run_local(
    study: Study,
    selected: list,
    todo: list,
    dry_run: bool,
    max_parallel: int,
    gpu_ids: list[str],
    threads: int | None,
) -> int:
    from scripts.study_launch import LocalOptions, default_threads, launch_local, study_lock
    from scripts.study_state import fit_command

    if dry_run:
        for run in todo:
            click.echo(" ".join(fit_command(run)))
        return 0
    if not todo:
        note(PROG, "nothing to launch")
        return 0
    options = LocalOptions(max_parallel, gpu_ids, threads or default_threads(max_parallel))
    note(
        PROG,
        f"launching {len(todo)} run(s), {max_parallel} at a time, {options.threads} "
        f"CPU thread(s) each; logs in {study.folder / 'logs'}",
    )
    with study_lock(study), _Display(study, selected) as (show, event):
        final = launch_local(study, todo, options, show, event)
    states = study_states(study, selected)
    click.echo(status_text(states, study.folder))
    if any(state in ("interrupted", "queued") for state in final.values()):
        note(PROG, f"interrupted; run `mtl-study run {study.folder}` again to continue")
        return EXIT_INTERRUPTED
    return 0


class _Display:
    """The live table on a terminal, one line per event otherwise."""

    def __init__(self, study: Study, runs: list) -> None:
        from rich.console import Console

        self.study = study
        self.runs = runs
        self.console = Console(stderr=True)
        self.live = None

    def __enter__(self) -> tuple[Callable[[], None], Callable[..., None]]:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(
                _rich_table(study_states(self.study, self.runs), self.study.folder),
                console=self.console,
                auto_refresh=False,  # redrawn by show(): no thread while children are forked
                transient=True,
            )
            self.live.__enter__()
        return self.show, self.event

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def show(self) -> None:
        if self.live is not None:
            table = _rich_table(study_states(self.study, self.runs), self.study.folder)
            self.live.update(table, refresh=True)

    def event(self, message: str) -> None:
        if self.live is not None:
            self.live.console.log(message)
        else:
            note(PROG, message)


def _run_slurm(
    study: Study,
    todo: list,
    dry_run: bool,
    wait: bool,
    cluster: str,
    partition: str | None,
    account: str | None,
    gpus_per_run: int,
    cpus_per_run: int,
    mem_gb: float | None,
    time_min: int,
    array_parallelism: int,
    max_requeues: int,
    setup: tuple[str, ...],
) -> int:
    try:
        from scripts.study_slurm import SlurmOptions, launch_slurm, sbatch_script
    except ImportError:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'mtl-toolkit[runtime]'"
        ) from None
    options = SlurmOptions(
        partition,
        gpus_per_run,
        cpus_per_run,
        time_min,
        mem_gb,
        array_parallelism,
        max_requeues,
        account,
        list(setup),
    )
    job_name = f"mtl-study-{study.name}"
    if dry_run:
        click.echo(sbatch_script(study.folder, max(1, len(todo)), options, job_name), nl=False)
        for index, run in enumerate(todo):
            click.echo(f"# array task {index}: {run.name}")
        return 0
    if not todo:
        note(PROG, "nothing to launch")
        return 0
    jobs = launch_slurm(study.folder, todo, options, job_name, cluster)
    array_id = str(jobs[0].job_id).split("_")[0]
    note(
        PROG,
        f"submitted {len(jobs)} run(s) as job array {array_id}; follow them with "
        f"mtl-study status {study.folder}",
    )
    if not wait:
        return 0
    failed = 0
    for job, run in zip(jobs, todo, strict=True):
        try:
            job.result()
        except Exception as exc:  # submitit reports any job failure this way
            failed += 1
            note(PROG, f"{run.name}: failed ({str(exc).strip().splitlines()[-1]})")
    click.echo(status_text(study_states(study), study.folder))
    return EXIT_FAILED_RUNS if failed else 0


@main.command(context_settings=_SETTINGS)
@_study_arg
def report(study: Path) -> None:
    """Compare STUDY's combinations: per-task primary metric (mean ± std over seeds), delta-m
    against the study's single-task runs (as mtl-compare computes it), the best combination
    per task and overall, run wall times and, with pair runs, a task-affinity heatmap.

    Writes STUDY/report.md, report.json, report.csv (and affinity.png) and prints the table.
    Runs that are missing or failed are listed and left out.
    """
    from scripts.study_report import build_report, render_text, write_report

    with bad_input_exits(PROG):
        loaded = load_study(study)
        result = build_report(loaded)
        written = write_report(loaded, result)
        click.echo(render_text(result))
        note(PROG, f"wrote {', '.join(str(p) for p in written)}")


if __name__ == "__main__":
    main()
