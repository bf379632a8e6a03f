"""A trained toy run directory for the companion-command tests (mtl-run fit, in-process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runtime.cli import main as mtl_run


def train_toy_run(root: Path, config: dict[str, Any], name: str = "run") -> Path:
    """Write ``config`` to ``root/<name>.yaml``, fit it into ``root/<name>`` and return that."""
    root.mkdir(parents=True, exist_ok=True)
    config = {**config, "trainer": {**config.get("trainer", {}), "enable_progress_bar": False}}
    config_path = root / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = root / name
    code = mtl_run([str(config_path), "--run-dir", str(run_dir)])
    assert code == 0, f"mtl-run failed on {config_path}"
    return run_dir
