"""``mtl-make-config``: compile a maker config into a standalone run config.

Kept light on purpose: ``--help`` must answer in well under 0.3 s, so nothing heavy is
imported at module level (and nothing from torch, ever).
"""

from __future__ import annotations

from pathlib import Path

import click

from .command import CONTEXT_SETTINGS, version_option
from .make_config import execute


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from .yamlio import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings=CONTEXT_SETTINGS)
@version_option("mtl-make-config")
@click.argument("maker", required=False, type=click.Path(dir_okay=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Where to write the run config (default: the maker's output_path, "
    "else MAKER with .run.yaml).",
)
@click.option(
    "--dialect",
    type=click.Choice(["auto", "native", "rslearn"]),
    default="auto",
    show_default=True,
    help="Maker dialect; auto detects rslearn makers.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a substitution (NAME=VALUE) or any key of the run config "
    "(a.b.c=VALUE, applied last). Repeatable.",
)
@click.option(
    "--explain",
    "explain",
    multiple=True,
    metavar="KEY",
    help="Print KEY's final value and the file:line chain that set it. Repeatable.",
)
@click.option(
    "--print", "to_stdout", is_flag=True, help="Write the run config to stdout instead of a file."
)
@click.option("--schema", is_flag=True, help="Print the JSON Schema of the maker format and exit.")
@click.option(
    "--single-task",
    is_flag=True,
    help="Write one single-task run config per dataset into the folder -o DIR "
    "(default: MAKER's folder/<stem>_single), as baselines for mtl-compare.",
)
@click.option(
    "--sweep",
    is_flag=True,
    help="Expand the maker's sweep: section into a study folder -o DIR (default: "
    "studies/<stem>): one run config per combination and study.yaml, for "
    "mtl-study.",
)
@click.option(
    "--max-file-size",
    "max_size",
    metavar="SIZE",
    callback=_size,
    envvar="MTL_MAX_FILE_SIZE",
    show_envvar=True,
    help="Size cap for each input file and for the output, in bytes or like 64M, 1G (default 64M).",
)
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
    max_size: int | None,
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
        raise click.UsageError(
            "--single-task writes files; it cannot be combined with --explain or --print"
        )
    if sweep and (single_task or explain or to_stdout):
        raise click.UsageError(
            "--sweep writes a study folder; it cannot be combined with "
            "--single-task, --explain or --print"
        )
    execute(
        maker, output, dialect, sets, explain, to_stdout, single_task, max_size, quiet, sweep=sweep
    )
