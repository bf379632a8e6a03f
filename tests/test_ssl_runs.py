"""The shipped self-supervised configs train under a balancer, objectives switch on and off
with their dataset configs, and a resumed run ends with the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from runtime.api import make_config
from runtime.cli import main as mtl_run

ROOT = Path(__file__).resolve().parent.parent


def ssl_config(objectives: list[str], balancer: str | None) -> dict:
    maker = {
        "base_path": str(ROOT / "base_configs/ssl.yaml"),
        "dataset_cfgs": [str(ROOT / f"dataset_configs/ssl_{name}.yaml") for name in objectives],
        "substitutions": {"dim": 8, "lr": 0.003, "epochs": 2, "seed": 0},
    }
    sets = {
        "trainer.limit_train_batches": 3,
        "trainer.limit_val_batches": 1,
        "trainer.logger": False,
    }
    if balancer:
        sets["model.init_args.balancer"] = {"class_path": balancer}
    return make_config(maker, sets=sets)


def fit(tmp_path: Path, config: dict, name: str, *extra: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp_path / name
    assert mtl_run([str(path), "--run-dir", str(run_dir), *extra]) == 0
    return run_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]


def test_objectives_toggle_with_their_dataset_configs():
    config = ssl_config(["contrastive", "stats"], None)
    tasks = config["model"]["init_args"]["tasks"]
    assert sorted(tasks) == ["ssl_contrastive", "ssl_stats"]
    assert sorted(config["data"]["init_args"]["data_modules"]) == ["ssl_contrastive", "ssl_stats"]
    everything = ssl_config(["augment", "masked", "contrastive", "stats"], None)
    assert len(everything["model"]["init_args"]["tasks"]) == 4


@pytest.mark.slow
def test_balanced_ssl_run_resumes_exactly(tmp_path):
    config = ssl_config(["augment", "masked", "contrastive"], "runtime.balancing.Uncertainty")
    straight = fit(tmp_path, config, "straight")
    half = {**config, "trainer": {**config["trainer"], "max_epochs": 1}}
    fit(tmp_path, half, "resumed")
    resumed = fit(tmp_path, config, "resumed", "--resume")
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert any("balancer" in k for k in a)  # the balancer's own weights trained too
    for key in a:
        assert torch.equal(a[key], b[key]), key
