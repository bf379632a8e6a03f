"""Where a run came from, for ``run_info.json``: the command line, package versions, the git
commit of the working directory and the run config's header (its input hashes)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_HASH_LINE = re.compile(r"^#\s*sha256\s+([0-9a-fA-F]{64})\s+(.+?)\s*$")
_PACKAGES = (
    "mtl-toolkit",
    "torch",
    "lightning",
    "jsonargparse",
    "torchmetrics",
    "numpy",
    "scikit-learn",
)


def header_comments(config_path: Path) -> dict[str, Any]:
    """The leading ``#`` comment block of a run config, and the ``# sha256 <hex> <path>``
    input hashes the compiler writes there."""
    lines: list[str] = []
    for line in config_path.read_text().splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        lines.append(line)
    inputs = [
        {"sha256": m.group(1), "path": m.group(2)}
        for m in (_HASH_LINE.match(line) for line in lines)
        if m
    ]
    return {"header": lines, "inputs": inputs}


def git_commit(cwd: Path) -> dict[str, Any] | None:
    """HEAD of the git checkout around ``cwd`` and whether it has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions() -> dict[str, str]:
    """Python's version and those of the installed packages a run's numbers depend on."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_info(argv: list[str], subcommand: str, config_path: Path, seed: Any) -> dict[str, Any]:
    """The provenance record of one ``mtl-run`` command."""
    return {
        "command": [Path(sys.argv[0]).name, *argv],
        "subcommand": subcommand,
        "config": str(config_path),
        "seed": seed,
        "versions": package_versions(),
        "git": git_commit(Path.cwd()),
        **header_comments(config_path),
    }
