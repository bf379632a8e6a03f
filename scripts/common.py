"""Plumbing shared by the companion commands (click): bad input exits 2 in one paragraph.

Every command wraps its work in :func:`bad_input_exits`, raises the toolkit's
``ConfigError`` for anything the user can fix, checks every output path with
:func:`compiler.files.check_output` before doing work and writes through the toolkit's one
atomic writer (:mod:`compiler.files`), so nothing is ever half-written. Exit codes follow
:mod:`compiler.exitcodes`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from compiler import exitcodes
from compiler.errors import ConfigError, print_error
from compiler.files import write_json

EXIT_BAD_INPUT = exitcodes.BAD_INPUT


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` on stderr and exit with code 2."""
    print_error(prog, message)
    sys.exit(EXIT_BAD_INPUT)


def note(prog: str, message: str) -> None:
    """Progress or a remark on stderr, so stdout stays for results."""
    click.echo(f"{prog}: {message}", err=True)


@contextmanager
def bad_input_exits(prog: str) -> Iterator[None]:
    """Exit codes of a command's work: the toolkit's ``ConfigError`` (bad config, checkpoint,
    argument, output path, failed write) -> 2, Ctrl-C -> 130, SIGTERM -> 143, anything else
    -> 1 with the traceback (a bug). Temporary files are removed on the way out."""
    try:
        with exitcodes.raise_on_sigterm():
            yield
    except ConfigError as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted (Ctrl-C); nothing half-written was left", err=True)
        sys.exit(exitcodes.INTERRUPTED)
    except exitcodes.Terminated:
        click.echo(f"{prog}: terminated (SIGTERM); nothing half-written was left", err=True)
        sys.exit(exitcodes.TERMINATED)
    except (click.ClickException, click.exceptions.Exit):
        raise  # click's own usage errors and exits keep their codes
    except Exception:  # anything else is a bug: say so, with the traceback
        sys.exit(exitcodes.report_bug(prog))


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and infinities (click's ``FloatRange`` lets NaN pass
    every bound, since it compares false), with ``FloatRange``'s optional bounds."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def device_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device cpu|cuda|cuda:N``, spelled the same on every command (``runtime.hardware``
    resolves it: the default is cuda when a GPU is available, else cpu)."""
    from runtime.hardware import DEVICE_HELP

    return click.option(
        "--device",
        default=None,
        metavar="cpu|cuda|cuda:N",
        help=f"Device to run on: {DEVICE_HELP}.",
    )(command)


def json_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The commands' ``--json PATH`` option (into ``json_path``): a machine-readable copy
    of what they print; check it with ``check_output(json_path, flag="--json")`` first."""
    return click.option(
        "--json", "json_path", type=click.Path(path_type=Path), metavar="PATH", help=help
    )


def write_json_result(prog: str, path: Path, data: Any) -> None:
    """Write a command's ``--json`` result (atomically) and say where it went."""
    write_json(path, data)
    note(prog, f"wrote {path}")
