"""Framework overhead of ``mtl-run`` against bare Lightning and a plain PyTorch loop.

Run: ``python benchmarks/runtime_overhead.py [--device cpu|cuda] [--precision 32-true|bf16-mixed]
[--compile] [--repeats 2]``. For each model it trains the same pre-built batches (a) through
``mtl-run``'s path (``runtime.cli.main``: jsonargparse, Lightning Trainer, MultiTaskModule
losses, logging, checkpoint callbacks, progress bar), (b) through bare Lightning (a
``training_step`` that returns the summed loss and logs nothing, default progress bar, CSV
logger) and (c) a hand-written loop (forward, per-task cross-entropy on the sliced merged
head, backward, AdamW, WarmupCosine). Each timed epoch runs from the epoch start to the end of
its last training batch (validation and checkpointing excluded; on CUDA the device is
synchronized at both ends), after a warm-up epoch; the best epoch of alternating runs counts.
Prints ms/step and the ratios plain/mtl-run and bare/mtl-run (1.0 = no overhead; the CPU
target is bare/mtl-run >= 0.85). ``--compile`` also times mtl-run with ``run.compile: true``
against eager. ``--clock thread`` times with the main thread's CPU time instead of the wall
clock: on a CPU shared with other jobs that measures the work each path does per step without
the time other processes take (every path trains in the main thread, one intra-op thread).
On CUDA, batches sit in pinned memory and every path copies them to the GPU each step with
``non_blocking=True``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from jsonargparse import ArgumentParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sampler_bench

MODELS: dict[str, dict[str, Any]] = {
    "quickstart": {  # the quickstart's MLP, 3 tasks on one merged 12-way head
        "input_shape": [64],
        "batch_size": 32,
        "steps": 300,
        "encoder": {
            "class_path": "runtime.encoders.MLPEncoder",
            "init_args": {"in_features": 64, "hidden_sizes": [128, 128], "dropout": 0.1},
        },
        "features": 128,
    },
    "medium": {  # Transformer over [B=64, T=32, F=32] sequences
        "input_shape": [32, 32],
        "batch_size": 64,
        "steps": 40,
        "encoder": {
            "class_path": "runtime.encoders.TransformerEncoder",
            "init_args": {
                "in_features": 32,
                "d_model": 128,
                "num_layers": 2,
                "num_heads": 4,
                "dropout": 0.1,
            },
        },
        "features": 128,
    },
    "large": {  # Transformer d=512, 6 layers over [B=256, T=64, F=64] (meant for a GPU)
        "input_shape": [64, 64],
        "batch_size": 256,
        "steps": 30,
        "encoder": {
            "class_path": "runtime.encoders.TransformerEncoder",
            "init_args": {
                "in_features": 64,
                "d_model": 512,
                "num_layers": 6,
                "num_heads": 8,
                "dropout": 0.1,
            },
        },
        "features": 512,
    },
}
TASKS = {"t0": 5, "t1": 5, "t2": 2}


def make_batches(
    spec: dict[str, Any], count: int, seed: int = 0, pin: bool = False
) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    names = list(TASKS)
    batches = []
    for i in range(count):
        task = names[i % len(names)]
        x = torch.randn(spec["batch_size"], *spec["input_shape"], generator=g)
        y = torch.randint(0, TASKS[task], (spec["batch_size"],), generator=g)
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
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
    """The benchmark's pre-built batches, as a data module (pinned for a GPU)."""

    def __init__(self, model: str, steps: int, pin: bool = False) -> None:
        super().__init__()
        self.train = make_batches(MODELS[model], steps, pin=pin)
        self.val = make_batches(MODELS[model], 3, seed=1, pin=pin)

    def train_dataloader(self) -> _Batches:
        return _Batches(self.train)

    def val_dataloader(self) -> _Batches:
        return _Batches(self.val)


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


class EpochTimer(L.Callback):
    """Time from each training epoch's start to the end of its last training batch."""

    seconds: ClassVar[list[float]] = []

    def __init__(self, cuda: bool = False, clock: str = "wall") -> None:
        self.cuda = cuda
        self.clock = CLOCKS[clock]

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return self.clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._now()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            EpochTimer.seconds.append(self._now() - self._start)


def _merged_model(spec: dict[str, Any]) -> dict[str, Any]:
    offsets, start = {}, 0
    for task, width in TASKS.items():
        offsets[task] = {"offset": start, "num_outputs": width}
        start += width
    return {
        "class_path": "runtime.model.MultiTaskModel",
        "init_args": {
            "encoder": [spec["encoder"]],
            "decoders": {
                "merged": [
                    {
                        "class_path": "runtime.heads.ClassificationHead",
                        "init_args": {"in_features": spec["features"], "num_outputs": start},
                    }
                ]
            },
            "decoder_to_target": {"merged": list(TASKS)},
            "task_label_offsets": offsets,
        },
    }


def _trainer_args(epochs: int, device: str, precision: str) -> dict[str, Any]:
    return {
        "max_epochs": epochs,
        "accelerator": "gpu" if device == "cuda" else "cpu",
        "devices": 1,
        "precision": precision,
        "log_every_n_steps": 50,
        "enable_model_summary": False,
    }


def run_config(
    name: str,
    epochs: int,
    device: str = "cpu",
    precision: str = "32-true",
    compile_: bool = False,
    clock: str = "wall",
) -> dict[str, Any]:
    spec = MODELS[name]
    cuda = device == "cuda"
    return {
        "seed_everything": 0,
        "model": {
            "class_path": "runtime.module.MultiTaskModule",
            "init_args": {
                "model": _merged_model(spec),
                "tasks": {
                    t: {
                        "class_path": "runtime.tasks.ClassificationTask",
                        "init_args": {"num_classes": n},
                    }
                    for t, n in TASKS.items()
                },
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
                "scheduler": {
                    "class_path": "runtime.schedulers.WarmupCosine",
                    "init_args": {"warmup_steps": 10},
                },
            },
        },
        "data": {
            "class_path": "runtime_overhead.FixedBatches",
            "init_args": {"model": name, "steps": spec["steps"], "pin": cuda},
        },
        "trainer": {
            **_trainer_args(epochs, device, precision),
            "callbacks": [
                {
                    "class_path": "runtime_overhead.EpochTimer",
                    "init_args": {"cuda": cuda, "clock": clock},
                }
            ],
        },
        "run": {"num_threads": 1, "compile": compile_},
    }


def _best_step(name: str) -> float:
    import runtime_overhead  # the module the config's class_paths name

    return min(runtime_overhead.EpochTimer.seconds[1:]) / MODELS[name]["steps"]


def time_mtl_run(
    name: str, epochs: int, device: str, precision: str, clock: str, compile_: bool = False
) -> float:
    """Seconds per step of the fastest timed epoch (the first epoch warms up)."""
    import runtime_overhead

    from runtime.cli import main

    runtime_overhead.EpochTimer.seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(
            yaml.safe_dump(run_config(name, epochs, device, precision, compile_, clock))
        )
        code = main([str(path), "--run-dir", str(Path(tmp) / "run")])
        assert code == 0
    return _best_step(name)


def _build_model(name: str) -> torch.nn.Module:
    parser = ArgumentParser()
    parser.add_argument("--model", type=torch.nn.Module)
    torch.manual_seed(0)
    return parser.instantiate_classes(
        parser.parse_object({"model": _merged_model(MODELS[name])})
    ).model


def _summed_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    outputs = model(batch["inputs"], batch["targets"].keys())
    return sum(F.cross_entropy(outputs[t], y) for t, y in batch["targets"].items())


class BareModule(L.LightningModule):
    """The same model, losses, optimizer and schedule; ``training_step`` logs nothing."""

    def __init__(self, name: str, epochs: int) -> None:
        super().__init__()
        self.model = _build_model(name)
        self.total_steps = epochs * MODELS[name]["steps"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return _summed_loss(self.model, batch)

    def configure_optimizers(self) -> Any:
        from runtime.schedulers import WarmupCosine

        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
        scheduler = WarmupCosine(optimizer, warmup_steps=10, total_steps=self.total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def time_bare_lightning(name: str, epochs: int, device: str, precision: str, clock: str) -> float:
    """Bare Lightning: default progress bar, CSV logger, no checkpointing, no validation."""
    import runtime_overhead
    from lightning.pytorch.loggers import CSVLogger

    torch.set_num_threads(1)
    runtime_overhead.EpochTimer.seconds = []
    data = runtime_overhead.FixedBatches(name, MODELS[name]["steps"], pin=device == "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            **_trainer_args(epochs, device, precision),
            callbacks=[runtime_overhead.EpochTimer(device == "cuda", clock)],
            logger=CSVLogger(tmp),
            enable_checkpointing=False,
            limit_val_batches=0,
            default_root_dir=tmp,
        )
        trainer.fit(BareModule(name, epochs), train_dataloaders=data.train_dataloader())
    return _best_step(name)


def time_plain(name: str, epochs: int, device: str, precision: str, clock: str) -> float:
    """The same model, batches, losses, optimizer and schedule in a hand-written loop."""
    torch.set_num_threads(1)
    from runtime.schedulers import WarmupCosine

    cuda = device == "cuda"
    model = _build_model(name).to(device)
    batches = make_batches(MODELS[name], MODELS[name]["steps"], pin=cuda)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = WarmupCosine(optimizer, warmup_steps=10, total_steps=epochs * len(batches))
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    model.train()
    now = CLOCKS[clock]
    times = []
    for _ in range(epochs):
        if cuda:
            torch.cuda.synchronize()
        start = now()
        for batch in batches:
            batch = {
                "inputs": batch["inputs"].to(device, non_blocking=cuda),
                "targets": {
                    t: y.to(device, non_blocking=cuda) for t, y in batch["targets"].items()
                },
            }
            with autocast:
                loss = _summed_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(now() - start)
    return min(times[1:]) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternate runs per path")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first warms up)")
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        help=f"of {', '.join(MODELS)} (default: quickstart and medium on CPU, all on CUDA)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time mtl-run with run.compile: true against eager",
    )
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or the main thread's CPU time (a shared CPU)",
    )
    parser.add_argument("--no-sampler", action="store_true", help="skip the sampler figures")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    models = args.models or (list(MODELS) if args.device == "cuda" else ["quickstart", "medium"])
    how = (args.epochs, args.device, args.precision, args.clock)
    rows, compiled = [], []
    for name in models:
        plain, bare, mtl, comp = [], [], [], []
        for _ in range(args.repeats):  # alternate, keep the best of each: the machine is shared
            plain.append(time_plain(name, *how))
            bare.append(time_bare_lightning(name, *how))
            mtl.append(time_mtl_run(name, *how))
            if args.compile:
                comp.append(time_mtl_run(name, *how, compile_=True))
        p, b, m = min(plain) * 1e3, min(bare) * 1e3, min(mtl) * 1e3
        rows.append((name, p, b, m, p / m, b / m))
        if comp:
            compiled.append((name, m, min(comp) * 1e3))
    print(
        f"\n{args.device}, {args.precision}, torch {torch.__version__}, "
        f"{args.repeats} repeats x {args.epochs} epochs, {args.clock} clock"
    )
    print(
        f"{'model':<12}{'plain ms/step':>15}{'bare L ms/step':>16}{'mtl-run ms/step':>17}"
        f"{'plain/mtl-run':>15}{'bare/mtl-run':>14}"
    )
    for name, p, b, m, pm, bm in rows:
        print(f"{name:<12}{p:>15.2f}{b:>16.2f}{m:>17.2f}{pm:>15.3f}{bm:>14.3f}")
    if compiled:
        print(f"\n{'model':<12}{'eager ms/step':>15}{'compiled ms/step':>18}{'eager/compiled':>16}")
        for name, eager, comp in compiled:
            print(f"{name:<12}{eager:>15.2f}{comp:>18.2f}{eager / comp:>16.3f}")
    if not args.no_sampler:
        print()
        sampler_bench.main()  # the sampler's own cost: one epoch over 10 datasets, 1M samples


if __name__ == "__main__":
    main()
