"""The exit codes of every mtl-toolkit command (one table, documented in
``docs/error-handling.md``).

Kept in the torch-free base layer so the compiler, the runtime and the companion commands all
return the same numbers for the same outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: The command did what it was asked.
OK = 0
#: An internal error: a bug in mtl-toolkit (the traceback is printed; please report it).
INTERNAL_ERROR = 1
#: Bad input or a refusal (config, checkpoint, data file, argument, output path, a run
#: directory in use, a full disk): one paragraph on stderr, nothing half-written.
BAD_INPUT = 2
#: Training stopped on a non-finite (NaN/inf) loss.
NON_FINITE_LOSS = 3
#: Ctrl-C (SIGINT): 128 + 2, the shell's convention.
INTERRUPTED = 130
#: SIGTERM (a scheduler's stop): 128 + 15, the shell's convention. ``mtl-run fit`` saves a
#: resumable checkpoint first and prints the ``--resume`` command.
TERMINATED = 143

TABLE: dict[int, str] = {
    OK: "success",
    INTERNAL_ERROR: "internal error (a bug: the traceback is printed)",
    BAD_INPUT: "bad input or refusal (one paragraph on stderr, nothing written)",
    NON_FINITE_LOSS: "training stopped on a non-finite loss",
    INTERRUPTED: "interrupted by Ctrl-C (SIGINT)",
    TERMINATED: "terminated by SIGTERM (mtl-run fit: a resumable checkpoint was saved)",
}


def report_bug(prog: str) -> int:
    """Print the exception being handled with its traceback, say it is a bug; exit code 1."""
    import sys
    import traceback

    traceback.print_exc()
    print(
        f"{prog}: internal error: this is a bug in mtl-toolkit; please report it with the "
        "traceback above and the command line",
        file=sys.stderr,
    )
    return INTERNAL_ERROR


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN or infinite loss (exit :data:`NON_FINITE_LOSS`); the runtime
    raises a subclass that names the step and the task."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (see
    :func:`raise_on_sigterm`); a ``BaseException`` so ``except Exception`` does not swallow it."""


@contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`, so ``finally`` blocks (temporary
    files) run; the previous handler comes back afterwards."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
