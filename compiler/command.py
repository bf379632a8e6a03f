"""What every click command of the toolkit shares: ``-h``/``--help`` and ``--version``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def version_option(prog: str) -> Callable[[F], F]:
    """``--version``: prints ``PROG VERSION`` (the installed mtl-toolkit's version)."""
    return click.version_option(
        package_name="mtl-toolkit", prog_name=prog, message="%(prog)s %(version)s"
    )
