"""Tiny studies over the repository's digit datasets, and running mtl-study on them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("digits_low", "digits_high", "parity")


def tiny_study(
    root: Path,
    sweep: dict[str, Any],
    epochs: int = 1,
    name: str = "study",
    datasets: tuple[str, ...] = DATASETS,
) -> Path:
    """Write a maker over ``datasets`` with ``sweep``, compile it with --sweep; the folder."""
    maker = root / f"{name}.maker.yaml"
    maker.write_text(
        yaml.safe_dump(
            {
                "base_path": str(REPO / "base_configs" / "quickstart.yaml"),
                "dataset_cfgs": [str(REPO / "dataset_configs" / f"{d}.yaml") for d in datasets],
                "substitutions": {"num_features": 64, "hidden": 16, "lr": 0.01},
                "merge_options": {"merge_heads": True, "merge_task_labels": True},
                "global_overrides": {
                    "trainer": {
                        "max_epochs": epochs,
                        "limit_train_batches": 4,
                        "limit_val_batches": 2,
                        "log_every_n_steps": 1,
                        "enable_progress_bar": False,
                        "enable_model_summary": False,
                    }
                },
                "sweep": sweep,
            },
            sort_keys=False,
        )
    )
    from compiler.cli import main

    folder = root / name
    result = CliRunner().invoke(main, [str(maker), "--sweep", "-o", str(folder), "-q"])
    assert result.exit_code == 0, result.output
    return folder


def train_longer(folder: Path, run: str, epochs: int = 150) -> None:
    """Give one compiled run of the study ``epochs`` epochs (~0.1 s each), so a test that
    signals it once its first checkpoint appears finds it still training: with a few epochs it
    can finish between the checkpoint seen and the signal on a loaded machine."""
    config = folder / "configs" / f"{run}.yaml"
    text = config.read_text()
    lengthened = re.sub(r"(?m)^(\s*max_epochs:) \d+$", rf"\1 {epochs}", text, count=1)
    assert lengthened != text, f"no max_epochs in {config}"
    config.write_text(lengthened)


def study_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "scripts.study", *(str(a) for a in args)]


def mtl_study(*args: Any, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``mtl-study ARGS`` in a subprocess (CPU only, one thread per run)."""
    return subprocess.run(
        study_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=cpu_env(),
    )


def cpu_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return env


def manifest_runs(folder: Path) -> list[dict[str, Any]]:
    return yaml.safe_load((folder / "study.yaml").read_text())["runs"]
