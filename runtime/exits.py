"""How ``mtl-run`` ends: the exit code of every outcome (the table is
:mod:`compiler.exitcodes`) and a resumable checkpoint on SIGTERM.

Lightning turns SIGTERM into a stop after the current training step (``SIGTERMException``,
which would exit 0); :class:`runtime.stop.GracefulStop` saves ``last.ckpt`` at that point,
through the atomic checkpoint writer, so ``--resume`` continues exactly, and :func:`guarded`
exits :data:`~compiler.exitcodes.TERMINATED` with the command that resumes the run. Outside
``trainer.fit`` a SIGTERM raises :class:`~compiler.exitcodes.Terminated` at once. Nothing here
imports Lightning (fast refusals stay fast).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler import exitcodes
from compiler.errors import ConfigError, print_error
from compiler.files import WriteError

PROG = "mtl-run"


@dataclass
class _Run:
    """What the exit path needs to know about the run in progress."""

    run_dir: Path | None = None
    subcommand: str = "fit"
    in_fit: bool = False
    interrupted: bool = False
    saved: Path | None = None


RUN = _Run()


def _on_sigterm(signum: int, frame: Any) -> None:
    if RUN.in_fit:
        return  # Lightning's own handler (called before this one) stops after the step
    raise exitcodes.Terminated


def resume_command(argv: list[str], run_dir: Path | None) -> str:
    """The ``mtl-run`` command line that continues this run."""
    args = [a for a in argv if a != "--force"]
    if "--resume" not in args:
        args.append("--resume")
    named = any(a.split("=")[0] in ("--run-dir", "--run_dir") for a in args)
    if run_dir is not None and not named:
        args += ["--run-dir", str(run_dir)]
    return shlex.join([PROG, *args])


def _has_checkpoint() -> bool:
    from runtime.rundir import RunDir

    return RUN.run_dir is not None and RunDir(RUN.run_dir).has_checkpoint()


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _resume_hint(argv: list[str]) -> str:
    if RUN.subcommand != "fit" or not _has_checkpoint():
        return ""
    return f"; resume with: {resume_command(argv, RUN.run_dir)}"


def _lightning_sigterm(exc: BaseException) -> bool:
    """Lightning's stop on SIGTERM (a ``SystemExit`` that would exit 0)."""
    module = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return module is not None and isinstance(exc, module.SIGTERMException)


@contextmanager
def _sigterm_handled() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(body: Callable[[], int], argv: list[str]) -> int:
    """Run ``body`` (the command) and map how it ends to the exit-code table."""
    try:
        with _sigterm_handled():
            return body()
    except WriteError as err:
        print_error(PROG, f"{err}{_resume_hint(argv)}")
        return exitcodes.BAD_INPUT
    except ConfigError as err:
        print_error(PROG, str(err), "config error")
        return exitcodes.BAD_INPUT
    except exitcodes.NonFiniteLoss as err:
        print_error(PROG, str(err))
        return exitcodes.NON_FINITE_LOSS
    except KeyboardInterrupt:
        _say(f"interrupted (Ctrl-C){_resume_hint(argv)}")
        return exitcodes.INTERRUPTED
    except (exitcodes.Terminated, SystemExit) as exc:
        if not isinstance(exc, exitcodes.Terminated) and not _lightning_sigterm(exc):
            if RUN.interrupted:  # Lightning caught Ctrl-C and exits 1
                _say(f"interrupted (Ctrl-C){_resume_hint(argv)}")
                return exitcodes.INTERRUPTED
            raise
        RUN.in_fit = False
        if RUN.saved is not None:
            _say(
                f"terminated (SIGTERM): saved a resumable checkpoint {RUN.saved}; "
                f"resume with: {resume_command(argv, RUN.run_dir)}"
            )
        else:
            before = " before any training step" if RUN.subcommand == "fit" else ""
            _say(f"terminated (SIGTERM){before}{_resume_hint(argv)}")
        return exitcodes.TERMINATED
    except Exception:  # anything else is a bug: say so, with the traceback
        return exitcodes.report_bug(PROG)
