"""What ``mtl-make-config`` does once its arguments are parsed (no click here).

Kept apart from the option parsing (:mod:`compiler.cli`) so that the launcher
(:mod:`compiler.launch`) can run a plain compile without importing click, a third of the
command's start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import exitcodes
from .errors import ConfigError, print_error, shown

EXIT_BAD_INPUT = exitcodes.BAD_INPUT


def say(message: str) -> None:
    """One line on stderr (file names that are not UTF-8 shown with \\x escapes)."""
    sys.stderr.write(f"mtl-make-config: {shown(message)}\n")
    sys.stderr.flush()


def fail(message: str) -> None:
    print_error("mtl-make-config", message)
    sys.exit(EXIT_BAD_INPUT)


def _stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def execute(
    maker: Path,
    output: Path | None,
    dialect: str,
    sets: tuple[str, ...],
    explain: tuple[str, ...],
    to_stdout: bool,
    single_task: bool,
    max_size: int | None,
    quiet: bool,
    sweep: bool = False,
) -> None:
    """Compile (and write, print or explain); bad input ends the process with exit code 2."""
    from .yamlio import DEFAULT_MAX_FILE_SIZE, file_size_cap

    try:
        with file_size_cap(max_size or DEFAULT_MAX_FILE_SIZE):
            if sweep:
                from .sweep import run_sweep_command

                run_sweep_command(maker, output, dialect, sets, quiet, _report)
            elif single_task:
                _run_single(maker, output, dialect, sets, quiet)
            else:
                _run(maker, output, dialect, sets, explain, to_stdout, quiet)
    except ConfigError as exc:
        fail(str(exc))
    except RecursionError:  # a backstop: depth is capped where input is read
        fail("the configuration is nested too deeply to compile")


def _report(compiled, quiet: bool) -> None:
    for warning in compiled.warnings:
        say(f"warning: {warning}")
    if not quiet:
        say(f"dialect {compiled.dialect.name} ({compiled.dialect.reason})")


def _check_target(compiled) -> str:
    """Check where one run config goes and render it; returns the text to write.

    Refuses folders, the compile's own inputs, names the file system cannot hold and output
    over the size cap, before anything is written.
    """
    out = compiled.output_path
    try:
        if "\0" in str(out):
            raise ValueError
        longest = _name_max(out.parent)
        for part in out.parts:
            if len(os.fsencode(part)) > longest:
                raise ConfigError(
                    f"output path has a name longer than the file system allows ({longest} bytes)",
                    file=out,
                )
        if out.is_dir():
            raise ConfigError("output path is a directory; give a file name", file=out)
        if out.exists() and not out.is_file():
            raise ConfigError(
                "output path exists and is not a regular file (a device, FIFO "
                "or socket); give a file name",
                file=out,
            )
        resolved = out.resolve()
    except ValueError:
        raise ConfigError("output path contains a NUL byte", file=out) from None
    except OSError as exc:
        raise ConfigError(f"cannot use the output path: {exc.strerror}", file=out) from None
    for src in compiled.inputs:
        if src.path.resolve() == resolved:
            raise ConfigError(
                "output path is one of the inputs; refusing to overwrite it", file=out
            )
    return _render(compiled)


def _render(compiled) -> str:
    """The run config's text, refused when over the size cap."""
    from .yamlio import MAX_FILE_SIZE_ENV, max_file_size

    text = compiled.text()
    if len(text) > max_file_size():
        raise ConfigError(
            f"the run config would be {len(text):,} bytes, over the size cap of "
            f"{max_file_size():,} bytes (raise it with --max-file-size or "
            f"{MAX_FILE_SIZE_ENV})",
            file=compiled.output_path,
        )
    return text


def _name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system holding ``folder`` allows."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _write_all(runs: list) -> None:
    """Check every target, then write them all (atomically: none or all)."""
    from .files import write_all_atomic

    files = [(run.output_path, _check_target(run)) for run in runs]
    try:
        write_all_atomic(files)
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, (str, Path)) else files[0][0]
        raise ConfigError(f"cannot write the run config: {exc.strerror}", file=where) from None


def _run_single(
    maker: Path, output: Path | None, dialect: str, sets: tuple[str, ...], quiet: bool
) -> None:
    from .build import compile_single_tasks

    out_dir = output or maker.parent / f"{maker.stem}_single"
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError("--single-task writes a folder, but this is a file", file=out_dir)
    except OSError as exc:
        raise ConfigError(f"cannot use the output folder: {exc.strerror}", file=out_dir) from None
    runs = compile_single_tasks(maker, out_dir, dialect=dialect, sets=sets)
    _report(runs[0], quiet)
    for run in runs[1:]:
        _report(run, quiet=True)  # warnings only
    _write_all(runs)  # every config compiled and checked before the first is written
    for run in runs:
        if not quiet:
            say(f"wrote {run.output_path} (single-task: {', '.join(run.datasets[0].tasks)})")


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
            _stdout(shown(explain_key(compiled, key)) + "\n")
        return
    if to_stdout:
        _stdout(_render(compiled))
        return
    _write_all([compiled])
    out = compiled.output_path
    if not quiet:
        n_tasks = sum(len(ds.tasks) for ds in compiled.datasets)
        say(f"wrote {out} ({len(compiled.datasets)} datasets, {n_tasks} tasks)")
