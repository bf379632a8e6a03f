"""The ``mtl-make-config`` entry point: plain compiles start without importing click.

click is a third of the command's start-up, more than the compile itself on typical makers.
A command line made only of the compile options below, each well formed, is run directly by
:func:`compiler.make_config.execute`; anything else (``--help``, ``--version``,
``--schema``, an unknown or malformed option, a usage error) goes to the click command
(:func:`compiler.cli.main`), the one definition of the options, their help and their errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

#: Flags of :func:`compiler.cli.main` and the parameter each sets.
_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--print": "to_stdout", "--single-task": "single_task"}
#: Options taking a value; repeatable ones collect a tuple.
_VALUED = {
    "-o": "output",
    "--output": "output",
    "--dialect": "dialect",
    "--set": "sets",
    "--explain": "explain",
    "--max-file-size": "max_size",
}
_REPEATED = ("sets", "explain")
_DIALECTS = ("auto", "native", "rslearn")


def plain_compile(argv: list[str]) -> dict[str, Any] | None:
    """The parameters of a plain compile command line, or None when click should parse it."""
    params: dict[str, Any] = {
        "maker": None,
        "output": None,
        "dialect": "auto",
        "sets": [],
        "explain": [],
        "to_stdout": False,
        "single_task": False,
        "max_size": os.environ.get("MTL_MAX_FILE_SIZE"),
        "quiet": False,
    }
    args = iter(argv)
    for arg in args:
        if arg in _FLAGS:
            params[_FLAGS[arg]] = True
            continue
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and name in _VALUED:
            pass
        elif arg in _VALUED:
            name, value = arg, next(args, None)
            if value is None or value.startswith("-"):
                return None
        elif arg.startswith("-") or params["maker"] is not None:
            return None
        else:
            params["maker"] = arg
            continue
        key = _VALUED[name]
        if key in _REPEATED:
            params[key].append(value)
        else:
            params[key] = value
    if params["maker"] is None or params["dialect"] not in _DIALECTS:
        return None
    if params["single_task"] and (params["explain"] or params["to_stdout"]):
        return None
    if params["max_size"] is not None:
        from .yamlio import parse_size

        try:
            params["max_size"] = parse_size(params["max_size"])
        except ValueError:
            return None
    params["maker"] = Path(params["maker"])
    params["output"] = Path(params["output"]) if params["output"] is not None else None
    params["sets"], params["explain"] = tuple(params["sets"]), tuple(params["explain"])
    return params


def main() -> None:
    params = plain_compile(sys.argv[1:])
    if params is None:
        from .cli import main as click_main

        click_main(prog_name="mtl-make-config")
        return
    from .make_config import execute

    execute(**params)
    sys.exit(0)
