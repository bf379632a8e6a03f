"""Reading an ``mtl-run`` command line: the subcommand, the run config and the rest.

Shared by the front door (:mod:`runtime.entry`, which answers before torch is imported) and
the full command (:mod:`runtime.cli`); standard library only, so neither imports the other.
"""

from __future__ import annotations

import os
from pathlib import Path

SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: Options of the command line that are no part of the run config (left out of its dump).
CLI_ONLY = ("run_dir", "resume", "force", "check", "ckpt_path", "device")
# Switches that take no value (so the next argument is not theirs).
_FLAGS = ("--resume", "--force", "--check", "--help", "-h", "--print_config")


def split_command_line(argv: list[str]) -> tuple[str, Path | None, list[str]]:
    """(subcommand, positional config path, jsonargparse arguments with ``--config`` first)."""
    args = list(argv)
    subcommand = args.pop(0) if args and args[0] in SUBCOMMANDS else "fit"
    for i, arg in enumerate(args):
        previous = args[i - 1] if i else ""
        takes_value = previous.startswith("-") and "=" not in previous and previous not in _FLAGS
        if not arg.startswith("-") and not takes_value:
            rest = args[:i] + args[i + 1 :]
            return subcommand, Path(arg), ["--config", arg, *rest]
    return subcommand, None, args


def launched_as_rank_zero() -> bool:
    """Whether this process is rank 0 of its launch (Lightning, torchrun, SLURM set these)."""
    return all(
        os.environ.get(var, "0") == "0"
        for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK")
    )
