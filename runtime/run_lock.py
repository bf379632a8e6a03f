"""The run directory's OS lock: one ``mtl-run fit``/``--resume`` per directory at a time.

``flock`` on ``<run_dir>/.lock``: the OS releases it when the process ends, however it ends
(SIGKILL included), so a stale lock never needs cleaning. Lightning-free, like the exit path.
"""

from __future__ import annotations

import os
from pathlib import Path

from compiler.errors import ConfigError

LOCK_NAME = ".lock"
#: Open lock files of this process (an flock lives as long as its file stays open; the OS
#: drops it when the process dies, however it dies).
_HELD_LOCKS: dict[Path, int] = {}


def lock_run_dir(run_dir: Path) -> None:
    """Take this process's exclusive OS lock on ``run_dir`` (``flock`` on ``run_dir/.lock``):
    a second ``mtl-run fit``/``--resume`` on the same directory is refused while this one
    lives. Only the launching process takes it (DDP workers do not)."""
    import fcntl

    key = run_dir.resolve()
    if key in _HELD_LOCKS:
        return
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ConfigError(
            f"cannot use run directory {run_dir}: {exc.strerror} (it must be writable)"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"run directory {run_dir} is in use by another mtl-run process (pid {holder}); "
            "wait for it to end (or stop it) before running or resuming it again"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD_LOCKS[key] = fd


def release_locks() -> None:
    """Drop the locks this process holds (the command is over; in-process callers go on)."""
    while _HELD_LOCKS:
        _, fd = _HELD_LOCKS.popitem()
        os.close(fd)
