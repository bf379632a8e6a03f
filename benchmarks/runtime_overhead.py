"""Framework overhead of ``mtl-run`` against a plain PyTorch loop on the same model and batches.

Run: ``python benchmarks/runtime_overhead.py [--repeats 3]``. For each model it trains the
same pre-built batches (a) through ``mtl-run``'s path (``runtime.cli.main``: jsonargparse,
Lightning Trainer, MultiTaskModule losses/logging/progress bar) and (b) a hand-written loop
(forward, per-task cross-entropy on the sliced merged head, backward, AdamW, WarmupCosine),
timing whole training epochs after a warm-up epoch. Prints ms/step, the overhead in
ms/step and the throughput ratio plain/mtl-run (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sampler_bench  # noqa: E402 - the sampler figure is printed with the overhead figures

MODELS: dict[str, dict[str, Any]] = {
    "quickstart": {  # the quickstart's MLP, 3 tasks on one merged 12-way head
        "input_shape": [64], "batch_size": 32, "steps": 300,
        "encoder": {"class_path": "runtime.encoders.MLPEncoder",
                    "init_args": {"in_features": 64, "hidden_sizes": [128, 128],
                                  "dropout": 0.1}},
        "features": 128,
    },
    "medium": {  # Transformer over [B=64, T=32, F=32] sequences
        "input_shape": [32, 32], "batch_size": 64, "steps": 40,
        "encoder": {"class_path": "runtime.encoders.TransformerEncoder",
                    "init_args": {"in_features": 32, "d_model": 128, "num_layers": 2,
                                  "num_heads": 4, "dropout": 0.1}},
        "features": 128,
    },
}
TASKS = {"t0": 5, "t1": 5, "t2": 2}


def make_batches(spec: dict[str, Any], count: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    names = list(TASKS)
    batches = []
    for i in range(count):
        task = names[i % len(names)]
        x = torch.randn(spec["batch_size"], *spec["input_shape"], generator=g)
        y = torch.randint(0, TASKS[task], (spec["batch_size"],), generator=g)
        batches.append({"dataset": task, "inputs": x, "targets": {task: y}})
    return batches


class _Batches:
    """An iterable of batches (a bare list would read as several data loaders)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class FixedBatches(L.LightningDataModule):
    """The benchmark's pre-built batches, as a data module."""

    def __init__(self, model: str, steps: int) -> None:
        super().__init__()
        self.train = make_batches(MODELS[model], steps)
        self.val = make_batches(MODELS[model], 3, seed=1)

    def train_dataloader(self) -> _Batches:
        return _Batches(self.train)

    def val_dataloader(self) -> _Batches:
        return _Batches(self.val)


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation and checkpointing excluded)."""

    seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        EpochTimer.seconds.append(time.perf_counter() - self._start)


def run_config(name: str, epochs: int) -> dict[str, Any]:
    spec = MODELS[name]
    offsets, start = {}, 0
    for task, width in TASKS.items():
        offsets[task] = {"offset": start, "num_outputs": width}
        start += width
    return {
        "seed_everything": 0,
        "model": {"class_path": "runtime.module.MultiTaskModule", "init_args": {
            "model": {"class_path": "runtime.model.MultiTaskModel", "init_args": {
                "encoder": [spec["encoder"]],
                "decoders": {"merged": [{"class_path": "runtime.heads.ClassificationHead",
                                         "init_args": {"in_features": spec["features"],
                                                       "num_outputs": start}}]},
                "decoder_to_target": {"merged": list(TASKS)},
                "task_label_offsets": offsets}},
            "tasks": {t: {"class_path": "runtime.tasks.ClassificationTask",
                          "init_args": {"num_classes": n}} for t, n in TASKS.items()},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
            "scheduler": {"class_path": "runtime.schedulers.WarmupCosine",
                          "init_args": {"warmup_steps": 10}}}},
        "data": {"class_path": "runtime_overhead.FixedBatches",
                 "init_args": {"model": name, "steps": spec["steps"]}},
        "trainer": {"max_epochs": epochs, "accelerator": "cpu", "devices": 1,
                    "log_every_n_steps": 50, "enable_model_summary": False,
                    "callbacks": [{"class_path": "runtime_overhead.EpochTimer"}]},
        "run": {"num_threads": 1},
    }


def time_mtl_run(name: str, epochs: int) -> float:
    """Seconds per step of the fastest timed epoch (the first epoch warms up)."""
    import runtime_overhead  # the module the config's class_paths name

    from runtime.cli import main

    runtime_overhead.EpochTimer.seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(yaml.safe_dump(run_config(name, epochs)))
        code = main([str(path), "--run-dir", str(Path(tmp) / "run")])
        assert code == 0
    return min(runtime_overhead.EpochTimer.seconds[1:]) / MODELS[name]["steps"]


def time_plain(name: str, epochs: int) -> float:
    """The same model, batches, losses, optimizer and schedule in a hand-written loop."""
    torch.set_num_threads(1)
    config = run_config(name, epochs)["model"]["init_args"]
    parser = ArgumentParser()
    parser.add_argument("--model", type=torch.nn.Module)
    torch.manual_seed(0)
    model = parser.instantiate_classes(parser.parse_object({"model": config["model"]})).model
    slices = {t: (b["offset"], b["num_outputs"]) for t, b in
              config["model"]["init_args"]["task_label_offsets"].items()}
    from runtime.schedulers import WarmupCosine

    batches = make_batches(MODELS[name], MODELS[name]["steps"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = WarmupCosine(optimizer, warmup_steps=10, total_steps=epochs * len(batches))
    model.train()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in batches:
            outputs = model(batch["inputs"], batch["targets"].keys())
            loss = sum(F.cross_entropy(outputs[t], y) for t, y in batch["targets"].items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        times.append(time.perf_counter() - start)
    assert slices  # the merged head is sliced inside MultiTaskModel, as in mtl-run
    return min(times[1:]) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs per path")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first warms up)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        plain, mtl = [], []
        for _ in range(args.repeats):  # alternate, keep the best of each: the machine is shared
            plain.append(time_plain(name, args.epochs))
            mtl.append(time_mtl_run(name, args.epochs))
        p, m = min(plain) * 1e3, min(mtl) * 1e3
        rows.append((name, p, m, m - p, p / m))
    print(f"\n{'model':<12}{'plain ms/step':>15}{'mtl-run ms/step':>17}"
          f"{'overhead ms/step':>18}{'throughput ratio':>18}")
    for name, p, m, over, ratio in rows:
        print(f"{name:<12}{p:>15.2f}{m:>17.2f}{over:>18.2f}{ratio:>18.3f}")
    print()
    sampler_bench.main()  # the sampler's own cost: one epoch over 10 datasets, 1M samples


if __name__ == "__main__":
    main()
