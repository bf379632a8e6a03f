"""``python federate_interrupt.py ROUND ARGS...``: ``mtl-federate ARGS`` stopped right after
round ROUND is committed, as an interruption between two rounds would stop it."""

from __future__ import annotations

import sys

from runtime.federated import rounds

stop_after = int(sys.argv[1])
_commit = rounds.commit


class Interrupted(Exception):
    """Stands for the kill: raised in Flower's server thread, so the simulation stops."""


def commit_then_stop(fed, number, arrays, record):
    _commit(fed, number, arrays, record)
    if number == stop_after:
        raise Interrupted(f"stopped after round {number}")


rounds.commit = commit_then_stop
sys.argv = ["mtl-federate", *sys.argv[2:]]
from scripts.federate import main  # noqa: E402

main()
