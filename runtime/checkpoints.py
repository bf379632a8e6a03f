"""Finding and loading checkpoints (always ``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def newest_loadable(directory: Path) -> tuple[Path, int] | None:
    """(path, global step) of the newest ``*.ckpt`` that loads (last or step checkpoints,
    not best ones); a file cut short by a killed process is skipped."""
    if not directory.is_dir():
        return None
    candidates = sorted(
        (p for p in directory.glob("*.ckpt") if not p.name.startswith("best")),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for path in candidates:
        try:
            step = int(load_checkpoint(path).get("global_step", 0))
        except Exception:  # noqa: BLE001 - any unreadable file is skipped, not fatal
            continue
        return path, step
    return None
