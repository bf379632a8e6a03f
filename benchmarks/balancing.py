"""Cost of every balancer against equal weighting: ms per training step and peak memory on a
~1.9M-parameter shared MLP with 4 task heads (one batch per task per step, as with
``sample_mode: all_datasets``). Each method runs in its own process so peak RSS (CPU) or peak
CUDA memory is its own. Prints one row per method with ratios to equal weighting.

    python benchmarks/balancing.py [--steps 20] [--batch 32] [--device cpu] [--repeats 5]
                                   [--methods Static DWA ...]

One process's fastest step moves by up to 10 % from one process to the next (memory layout,
frequency), more than the differences measured here; so each method runs in ``--repeats``
processes, interleaved with the other methods, and the row shows the median of their fastest
steps. The ``paired`` columns remove that spread: after its own steps each process also runs
the method and an equal-weighting twin of the same network (same weights, same batches)
step for step, alternating, and divides the two fastest steps, in wall time and in CPU time
of the process (one thread: on a loaded machine CPU time leaves out the waits for a core);
each column is the median of that ratio over the processes (equal weighting's own row shows
what is left of the noise).

Targets (docs/balancing.md): static, uncertainty, DWA, random and geometric-mean weighting
within 1.05x of equal weighting; FAMO, GradNorm and gradient methods cost about one extra
backward per task.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

AGG = "torchjd.aggregation"
METHODS = {
    "equal (sum)": None,
    "Static": ("runtime.balancing.Static", {"weights": {"t0": 2.0}}),
    "Uncertainty": ("runtime.balancing.Uncertainty", {}),
    "DWA": ("runtime.balancing.DWA", {}),
    "RandomWeighting": ("runtime.balancing.RandomWeighting", {}),
    "GeometricMean": ("runtime.balancing.GeometricMean", {}),
    "FAMO": ("runtime.balancing.FAMO", {}),
    "GradNorm": ("runtime.balancing.GradNorm", {}),
    "Aggregate(UPGrad)": ("runtime.balancing.Aggregate", {"aggregator": f"{AGG}.UPGrad"}),
    "Aggregate(MGDA)": ("runtime.balancing.Aggregate", {"aggregator": f"{AGG}.MGDA"}),
    "Aggregate(PCGrad)": ("runtime.balancing.Aggregate", {"aggregator": f"{AGG}.PCGrad"}),
    "Aggregate(CAGrad)": ("runtime.balancing.Aggregate", {"aggregator": f"{AGG}.CAGrad"}),
}
TASKS = ["t0", "t1", "t2", "t3"]


class Net(nn.Module):
    """Shared MLP 256-1024-1024-512 (~1.9M parameters) and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(256, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 512),
            nn.ReLU(),
        )
        self.decoders = nn.ModuleDict({t: nn.Linear(512, 10) for t in TASKS})

    def losses(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(
            [
                nn.functional.cross_entropy(self.decoders[t](self.encoder(x)), y)
                for t, x, y in zip(TASKS, xs, ys, strict=True)
            ]
        )


def build(method: str):
    import importlib

    spec = METHODS[method]
    if spec is None:
        return None
    path, args = spec
    args = dict(args)
    if "aggregator" in args:
        module, _, name = args["aggregator"].rpartition(".")
        extra = {"c": 0.4} if name == "CAGrad" else {}
        args["aggregator"] = getattr(importlib.import_module(module), name)(**extra)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**args)


class Trainer:
    """One network, its balancer (None: equal weighting) and optimizer; ``step`` times one
    training step."""

    def __init__(self, method: str, device: str, init: dict | None = None) -> None:
        torch.manual_seed(0)
        self.device = device
        self.net = Net().to(device)
        if init is not None:
            self.net.load_state_dict(init)
        self.balancer = build(method)
        if self.balancer is not None:
            self.balancer.bind(TASKS, self.net)
            self.balancer.to(device)
        params = list(self.net.parameters())
        params += [] if self.balancer is None else list(self.balancer.parameters())
        self.opt = torch.optim.AdamW(params, lr=1e-3)
        named = list(self.net.named_parameters())
        self.shared = [p for n, p in named if not n.startswith("decoders.")]
        self.heads = [p for n, p in named if n.startswith("decoders.")]
        self.present = torch.arange(len(TASKS))
        self.count = 0

    def step(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[float, float]:
        """(wall, CPU) seconds of one step."""
        from runtime.balancing import StepContext

        balancer = self.balancer
        start, cpu = time.perf_counter(), time.process_time()
        values = self.net.losses(xs, ys)
        if balancer is None:
            loss = values.sum()
        else:
            context = StepContext(self.shared, self.heads, self.count)
            loss = balancer.loss(values, self.present, context)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if balancer is not None and balancer.recompute_after_step:
            with torch.no_grad():
                balancer.after_step(self.net.losses(xs, ys))
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.count += 1
        return time.perf_counter() - start, time.process_time() - cpu


def run_one(method: str, steps: int, batch: int, device: str) -> dict[str, float]:
    torch.set_num_threads(1)
    torch.manual_seed(1)
    xs = [torch.randn(batch, 256, device=device) for _ in TASKS]
    ys = [torch.randint(10, (batch,), device=device) for _ in TASKS]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(method, device)
    init = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    timings = [trainer.step(xs, ys)[0] for _ in range(steps + 3)][3:]  # 3 warm-up steps
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    # paired: the method and an equal-weighting twin (from the same start), step for step
    twin, again = Trainer("equal (sum)", device, init), Trainer(method, device, init)
    pairs = [(again.step(xs, ys), twin.step(xs, ys)) for _ in range(steps + 3)][3:]
    return {
        "ms": 1000 * min(timings),  # fastest step: least disturbed by other jobs
        "peak_mb": peak / 2**20,
        "params": sum(p.numel() for p in trainer.net.parameters()),
        "paired": min(a[0] for a, _ in pairs) / min(b[0] for _, b in pairs),
        "paired_cpu": min(a[1] for a, _ in pairs) / min(b[1] for _, b in pairs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="processes per method")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS)[1:],
        help="only these (beside equal weighting); default: all",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(run_one(opts.one, opts.steps, opts.batch, opts.device)))
        return 0
    chosen = [m for m in METHODS if opts.methods is None or m in opts.methods or METHODS[m] is None]
    runs: dict[str, list[dict[str, float]]] = {method: [] for method in chosen}
    for _ in range(opts.repeats):  # interleaved: a slow minute of the machine hits every method
        for method in chosen:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    method,
                    "--steps",
                    str(opts.steps),
                    "--batch",
                    str(opts.batch),
                    "--device",
                    opts.device,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(f"{method}: failed: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            runs[method].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = {
        method: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for method, found in runs.items()
        if found
    }
    base = rows["equal (sum)"]
    print(
        f"model: {base['params'] / 1e6:.2f}M parameters, 4 tasks, batch {opts.batch} per "
        f"task, {opts.device}, median over {opts.repeats} processes of the fastest of "
        f"{opts.steps} steps"
    )
    print(
        f"{'method':<20} {'ms/step':>8} {'x equal':>8} {'paired':>7} {'(cpu)':>6} "
        f"{'peak MB':>8} {'x equal':>8}"
    )
    for method, r in rows.items():
        print(
            f"{method:<20} {r['ms']:>8.2f} {r['ms'] / base['ms']:>8.2f} {r['paired']:>7.3f} "
            f"{r['paired_cpu']:>6.3f} {r['peak_mb']:>8.0f} {r['peak_mb'] / base['peak_mb']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
