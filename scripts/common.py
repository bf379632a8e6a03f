"""Plumbing shared by the companion commands (click): bad input exits 2 in one paragraph.

Every command wraps its work in :func:`bad_input_exits`, raises the toolkit's
``ConfigError`` for anything the user can fix, and checks outputs with
:func:`refuse_existing` before doing work and writes through :func:`atomic_output`, so
nothing is ever half-written.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from compiler.errors import ConfigError

EXIT_BAD_INPUT = 2


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` on stderr and exit with code 2."""
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def note(prog: str, message: str) -> None:
    """Progress or a remark on stderr, so stdout stays for results."""
    click.echo(f"{prog}: {message}", err=True)


@contextmanager
def bad_input_exits(prog: str) -> Iterator[None]:
    """Turn the toolkit's ``ConfigError`` (bad config, checkpoint, argument) into exit 2."""
    try:
        yield
    except ConfigError as exc:
        fail(prog, str(exc))


def refuse_existing(path: Path, force: bool) -> None:
    """Refuse an existing output unless ``--force`` (checked before any work is done)."""
    if (path.exists() or path.is_symlink()) and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it")


@contextmanager
def atomic_output(path: Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary file or folder beside ``path`` that replaces it on success.

    On any error the temporary is removed and an existing ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if directory:  # mkdtemp makes a private (0700) folder; give it the usual mode
            umask = os.umask(0)
            os.umask(umask)
            target.chmod(0o777 & ~umask)
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{tmp.name}")
            path.rename(old)
        target.rename(path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def device_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--device cpu|cuda|cuda:N``, spelled the same on every command (``runtime.hardware``
    resolves it: the default is cuda when a GPU is available, else cpu)."""
    from runtime.hardware import DEVICE_HELP

    return click.option("--device", default=None, metavar="cpu|cuda|cuda:N",
                        help=f"Device to run on: {DEVICE_HELP}.")(command)
