"""Trains the quickstart for a few steps through ``mtl-run`` and reads back its weights: the
no-balancer identity test compares them with values recorded from the code before balancing
existed (``python tests/balancing_fixture.py`` rewrites the fixture; only do that on purpose).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests/fixtures/no_balancer_params.json"
#: a few steps with clipping, EMA and the warm-up scheduler: the automatic-optimization path
ARGS = (
    "--trainer.max_steps=12",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.gradient_clip_val=0.5",
    "--model.init_args.ema_decay=0.9",
)


def quickstart_config(out_dir: Path) -> Path:
    from compiler.cli import main as make_config

    config = out_dir / "quickstart.run.yaml"
    make_config.main(
        [str(REPO / "maker_configs/quickstart.yaml"), "-o", str(config), "-q"],
        standalone_mode=False,
    )
    return config


def train(out_dir: Path, *extra: str) -> dict[str, torch.Tensor]:
    """Weights (``state_dict`` of ``last.ckpt``, ``model.*`` keys) after the short fit."""
    from runtime.cli import main as mtl_run

    config = quickstart_config(out_dir)
    run_dir = out_dir / "run"
    assert mtl_run(["fit", str(config), "--run-dir", str(run_dir), *ARGS, *extra]) == 0
    state = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.")}


def summary(weights: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor: sum, sum of squares and its first 6 values (enough to catch any change)."""
    out = {}
    for name, value in sorted(weights.items()):
        flat = value.detach().double().flatten()
        out[name] = [float(flat.sum()), float((flat * flat).sum()), *map(float, flat[:6])]
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        figures = summary(train(Path(tmp)))
    FIXTURE.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({len(figures)} tensors)", file=sys.stderr)
