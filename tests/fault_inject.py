"""``python fault_inject.py MODE NAME#K ARGS...``: ``mtl-run ARGS`` with a fault injected into
the K-th write of the checkpoint file NAME (tests of kills and full disks, in a subprocess).

MODE: ``kill-in-write`` (SIGKILL after part of the file is written), ``kill-after`` (SIGKILL
right after the file is complete), ``sigterm-after`` / ``sigint-after`` (that signal right
after the file is complete), ``enospc`` / ``eio`` (the write fails with that error).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import torch

from runtime import checkpoints
from runtime.cli import main

FAILED_WRITES = ("kill-in-write", "enospc", "eio")
AFTER_WRITE = {
    "kill-after": signal.SIGKILL,
    "sigterm-after": signal.SIGTERM,
    "sigint-after": signal.SIGINT,
}
mode, where, *args = sys.argv[1:]
name, nth = where.split("#")
seen = {"count": 0, "armed": False}
_save = torch.save
_write = checkpoints.AtomicCheckpointIO.save_checkpoint


def faulty_save(obj, f, *rest, **kwargs):
    if not seen["armed"]:
        return _save(obj, f, *rest, **kwargs)
    f.write(b"PK\x03\x04 a checkpoint cut short")
    f.flush()
    if mode == "kill-in-write":
        os.kill(os.getpid(), signal.SIGKILL)
    code = errno.ENOSPC if mode == "enospc" else errno.EIO
    raise OSError(code, os.strerror(code))


def faulty_write(self, checkpoint, path, storage_options=None):
    if Path(path).name == name:
        seen["count"] += 1
    target = Path(path).name == name and seen["count"] == int(nth)
    seen["armed"] = target and mode in FAILED_WRITES
    _write(self, checkpoint, path, storage_options)
    if target and mode in AFTER_WRITE:
        os.kill(os.getpid(), AFTER_WRITE[mode])


torch.save = faulty_save
checkpoints.AtomicCheckpointIO.save_checkpoint = faulty_write
sys.exit(main(args))
