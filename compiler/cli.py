"""``mtl-make-config``: compile a maker config into a standalone run config.

Kept light on purpose: ``--help`` must answer in well under 0.3 s, so nothing heavy is
imported at module level (and nothing from torch, ever).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .command import CONTEXT_SETTINGS, version_option
from .errors import ConfigError

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"mtl-make-config: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.command(context_settings=CONTEXT_SETTINGS)
@version_option("mtl-make-config")
@click.argument("maker", required=False, type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write the run config (default: the maker's output_path, "
                   "else MAKER with .run.yaml).")
@click.option("--dialect", type=click.Choice(["auto", "native", "rslearn"]), default="auto",
              show_default=True, help="Maker dialect; auto detects rslearn makers.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Override a substitution (NAME=VALUE) or any key of the run config "
                   "(a.b.c=VALUE, applied last). Repeatable.")
@click.option("--explain", "explain", multiple=True, metavar="KEY",
              help="Print KEY's final value and the file:line chain that set it. Repeatable.")
@click.option("--print", "to_stdout", is_flag=True,
              help="Write the run config to stdout instead of a file.")
@click.option("--schema", is_flag=True, help="Print the JSON Schema of the maker format and exit.")
@click.option("--single-task", is_flag=True,
              help="Write one single-task run config per dataset into the folder -o DIR "
                   "(default: MAKER's folder/<stem>_single), as baselines for mtl-compare.")
@click.option("--sweep", is_flag=True,
              help="Expand the maker's sweep: section into a study folder -o DIR (default: "
                   "studies/<stem>): one run config per combination and study.yaml, for "
                   "mtl-study.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and warnings on stderr.")
def main(
    maker: Path | None,
    output: Path | None,
    dialect: str,
    sets: tuple[str, ...],
    explain: tuple[str, ...],
    to_stdout: bool,
    schema: bool,
    single_task: bool,
    sweep: bool,
    quiet: bool,
) -> None:
    """Compile MAKER (a maker config) into one standalone run config.

    \b
    Examples:
      mtl-make-config maker_configs/quickstart.yaml
      mtl-make-config maker_configs/quickstart.yaml -o runs/qs.yaml --set lr=0.01
      mtl-make-config maker_configs/quickstart.yaml --explain model.init_args.optimizer
      mtl-make-config maker_configs/quickstart.yaml --single-task -o runs/baselines
      mtl-make-config maker_configs/study_digits.yaml --sweep -o studies/digits
    """
    if schema:
        import json

        from .maker import json_schema

        click.echo(json.dumps(json_schema(), indent=2))
        return
    if maker is None:
        raise click.UsageError("missing argument 'MAKER' (a maker config file)")
    if single_task and (explain or to_stdout):
        raise click.UsageError("--single-task writes files; it cannot be combined with "
                               "--explain or --print")
    if sweep and (single_task or explain or to_stdout):
        raise click.UsageError("--sweep writes a study folder; it cannot be combined with "
                               "--single-task, --explain or --print")
    try:
        if sweep:
            from .sweep import run_sweep_command

            run_sweep_command(maker, output, dialect, sets, quiet, _report)
        elif single_task:
            _run_single(maker, output, dialect, sets, quiet)
        else:
            _run(maker, output, dialect, sets, explain, to_stdout, quiet)
    except ConfigError as exc:
        _fail(str(exc))
    except RecursionError:
        _fail(f"{maker}: the configuration is nested too deeply to compile")


def _report(compiled, quiet: bool) -> None:
    for warning in compiled.warnings:
        click.echo(f"mtl-make-config: warning: {warning}", err=True)
    if not quiet:
        click.echo(
            f"mtl-make-config: dialect {compiled.dialect.name} ({compiled.dialect.reason})",
            err=True,
        )


def _write(compiled) -> None:
    """Write one run config atomically, refusing folders and the compile's own inputs."""
    from .yamlio import write_atomic

    out = compiled.output_path
    if out.is_dir():
        raise ConfigError("output path is a directory; give a file name", file=out)
    resolved = out.resolve()
    for src in compiled.inputs:
        if src.path.resolve() == resolved:
            raise ConfigError("output path is one of the inputs; refusing to overwrite it",
                              file=out)
    try:
        write_atomic(out, compiled.text())
    except OSError as exc:
        raise ConfigError(f"cannot write the run config: {exc.strerror}", file=out) from None


def _run_single(maker: Path, output: Path | None, dialect: str, sets: tuple[str, ...],
                quiet: bool) -> None:
    from .build import compile_single_tasks

    out_dir = output or maker.parent / f"{maker.stem}_single"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("--single-task writes a folder, but this is a file", file=out_dir)
    runs = compile_single_tasks(maker, out_dir, dialect=dialect, sets=sets)
    _report(runs[0], quiet)
    for run in runs[1:]:
        _report(run, quiet=True)  # warnings only
    for run in runs:  # every config compiled before the first is written
        _write(run)
        if not quiet:
            click.echo(f"mtl-make-config: wrote {run.output_path} "
                       f"(single-task: {', '.join(run.datasets[0].tasks)})", err=True)


def _run(
    maker: Path,
    output: Path | None,
    dialect: str,
    sets: tuple[str, ...],
    explain: tuple[str, ...],
    to_stdout: bool,
    quiet: bool,
) -> None:
    from .build import compile_maker

    compiled = compile_maker(maker, dialect=dialect, sets=sets, output=output)
    _report(compiled, quiet)
    if explain:
        from .explain import explain_key

        for key in explain:
            click.echo(explain_key(compiled, key))
        return
    if to_stdout:
        click.echo(compiled.text(), nl=False)
        return
    _write(compiled)
    out = compiled.output_path
    if not quiet:
        n_tasks = sum(len(ds.tasks) for ds in compiled.datasets)
        click.echo(
            f"mtl-make-config: wrote {out} ({len(compiled.datasets)} datasets, {n_tasks} tasks)",
            err=True,
        )
