"""``mtl-run``'s front door: help, usage and the refusals that need no model, before torch.

Importing Lightning takes seconds; a missing file, an existing run directory or a mistyped
option must be answered at once. So this module imports only the standard library and the
torch-free compiler layer, answers what it can, and hands everything else to
:func:`runtime.cli.main`, which builds the run with ``LightningCLI``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from compiler.errors import did_you_mean, print_error
from runtime.command_line import launched_as_rank_zero, split_command_line
from runtime.rundir import RunDir

PROG = "mtl-run"
# Top-level options of the full parser (``mtl-run fit --help``); config keys go below them.
RUN_OPTIONS = ("run_dir", "run-dir", "resume", "force", "check", "ckpt_path", "device")
ROOT_OPTIONS = (
    *RUN_OPTIONS,
    "config",
    "print_config",
    "seed_everything",
    "trainer",
    "model",
    "data",
    "run",
    "help",
    "version",
)

USAGE = f"usage: {PROG} [fit|validate|test|predict] RUN.yaml [options] [--key.path=VALUE ...]"

HELP = f"""{USAGE}

Train, validate, test or predict with a compiled run config (what mtl-make-config
writes). Everything a run produces goes to its run directory.

subcommands:
  fit         train (the default when no subcommand is given)
  validate    score a checkpoint on the validation split (default: the run's best)
  test        score a checkpoint on the test split
  predict     write predictions/<task>.csv and .safetensors for the predict split

run options:
  --run-dir DIR       run directory (default: runs/<config stem>/, a .run suffix dropped;
                      a run's own config.yaml uses the directory it is in)
  --resume            continue the run in the run directory from its newest checkpoint
  --force             delete an existing run directory and start over
  --check             validate the config against the classes; train nothing
  --ckpt_path CKPT    validate/test/predict: best (default; last if the run has no
                      best), last, step-<N>, best-<task> or a checkpoint path
  --device DEVICE     cpu, cuda, cuda:N or auto: run on that one device (sets
                      trainer.accelerator and trainer.devices; default: the config's)
  --seed_everything N the run's seed
  --print_config      print the resolved config (every default filled in) and exit
  -h, --help          this help
  --version           the toolkit's version

overrides: any key of the run config, applied after the file:
  --trainer.max_epochs=3  --model.init_args.optimizer.init_args.lr=1e-3  --run.num_threads=1

examples:
  {PROG} maker_configs/quickstart.run.yaml
  {PROG} validate runs/quickstart/config.yaml
  {PROG} predict runs/quickstart/config.yaml --ckpt_path last

`{PROG} fit --help` lists every option of the run config, with the classes' docs.
The last line printed on stdout is the run directory; bad input exits with code 2.
"""


class UsageError(Exception):
    """Bad command line or a refusal found before anything is built (exit code 2)."""


def _option_value(args: list[str], *names: str) -> str | None:
    """The value of the last ``--name VALUE`` / ``--name=VALUE`` among ``names``."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(f"{name}="):
                found = arg.split("=", 1)[1]
    return found


def _switch_on(args: list[str], name: str) -> bool:
    value = "true" if name in args else _option_value(args, name)
    return value is not None and value.lower() in ("true", "yes", "1")


def _check_options(args: list[str]) -> None:
    """Refuse an option no part of the run config could take (``--epochs``, ``--resmue``)."""
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        root = arg[2:].split("=", 1)[0].split(".", 1)[0]
        if root.startswith("no_") and root[3:] in RUN_OPTIONS:
            continue
        if root not in ROOT_OPTIONS:
            hint = did_you_mean(f"--{root}", [f"--{o}" for o in ROOT_OPTIONS])
            raise UsageError(
                f"unknown option '--{root}'{hint}; run options are --run-dir, --resume, "
                "--force, --check, --ckpt_path, --device, --seed_everything, --print_config, "
                "and config "
                "keys are set as --trainer.KEY=VALUE, --model.KEY=VALUE, --data.KEY=VALUE or "
                f"--run.KEY=VALUE (see `{PROG} fit --help`)"
            )


def _check_config_file(path: Path) -> None:
    if path.is_dir():
        inside = RunDir(path).config
        hint = f" (a run directory's config is {inside})" if inside.is_file() else ""
        raise UsageError(f"{path} is a directory, not a run config{hint}")
    if not path.exists():
        raise UsageError(f"{path}: no such run config (compile one with mtl-make-config)")


def precheck(argv: list[str]) -> None:
    """Every refusal that needs neither torch nor the config's classes."""
    subcommand, config_path, args = split_command_line(argv)
    _check_options(args)
    config = config_path or _option_value(args, "--config", "-c")
    if config is None:
        raise UsageError(f"missing RUN.yaml (a compiled run config)\n{USAGE}")
    _check_config_file(Path(config))
    check, resume, force = (_switch_on(args, f) for f in ("--check", "--resume", "--force"))
    if subcommand != "fit" or check or resume or force or not launched_as_rank_zero():
        return
    given = _option_value(args, "--run-dir", "--run_dir")
    run_dir = RunDir(given) if given else RunDir.default_for(Path(config))
    if run_dir.path.is_dir() and any(run_dir.path.iterdir()):
        raise UsageError(run_dir.existing_message())


def version() -> str:
    from compiler import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(f"{USAGE}\n`{PROG} --help` for the options.", file=sys.stderr)
        return 2
    if argv in (["-h"], ["--help"]):
        print(HELP, end="")
        return 0
    if "--version" in argv:
        print(f"{PROG} {version()}")
        return 0
    if not ({"-h", "--help"} & set(argv)):
        try:
            precheck(argv)
        except UsageError as err:
            print_error(PROG, str(err))
            return 2
    from runtime.cli import main as run_main

    return run_main(argv)


if __name__ == "__main__":
    sys.exit(main())
