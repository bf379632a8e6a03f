"""Cost of every balancer against equal weighting: ms per training step and peak memory on a
~1.9M-parameter shared MLP with 4 task heads (one batch per task per step, as with
``sample_mode: all_datasets``). Each method runs in its own process so peak RSS (CPU) or peak
CUDA memory is its own. Prints one row per method with ratios to equal weighting.

    python benchmarks/balancing.py [--steps 20] [--batch 32] [--device cpu] [--repeats 5]

One process's fastest step moves by up to 10 % from one process to the next (memory layout,
frequency), more than the differences measured here; so each method runs in ``--repeats``
processes, interleaved with the other methods, and the row shows the median of their fastest
steps.

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


def run_one(method: str, steps: int, batch: int, device: str) -> dict[str, float]:
    from runtime.balancing import StepContext

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = Net().to(device)
    balancer = build(method)
    if balancer is not None:
        balancer.bind(TASKS, net)
        balancer.to(device)
    params = list(net.parameters()) + ([] if balancer is None else list(balancer.parameters()))
    opt = torch.optim.AdamW(params, lr=1e-3)
    shared = [p for n, p in net.named_parameters() if not n.startswith("decoders.")]
    heads = [p for n, p in net.named_parameters() if n.startswith("decoders.")]
    present = torch.arange(len(TASKS))
    xs = [torch.randn(batch, 256, device=device) for _ in TASKS]
    ys = [torch.randint(10, (batch,), device=device) for _ in TASKS]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timings = []
    for step in range(steps + 3):  # 3 warm-up steps
        start = time.perf_counter()
        values = net.losses(xs, ys)
        if balancer is None:
            loss = values.sum()
        else:
            loss = balancer.loss(values, present, StepContext(shared, heads, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if balancer is not None and balancer.recompute_after_step:
            with torch.no_grad():
                balancer.after_step(net.losses(xs, ys))
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 3:
            timings.append(time.perf_counter() - start)
    timings.sort()
    peak = (
        torch.cuda.max_memory_allocated()
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "ms": 1000 * timings[0],  # fastest step: least disturbed by other jobs
        "peak_mb": peak / 2**20,
        "params": sum(p.numel() for p in net.parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="processes per method")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(run_one(opts.one, opts.steps, opts.batch, opts.device)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    for _ in range(opts.repeats):  # interleaved: a slow minute of the machine hits every method
        for method in METHODS:
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
    print(f"{'method':<20} {'ms/step':>8} {'x equal':>8} {'peak MB':>8} {'x equal':>8}")
    for method, r in rows.items():
        print(
            f"{method:<20} {r['ms']:>8.2f} {r['ms'] / base['ms']:>8.2f} "
            f"{r['peak_mb']:>8.0f} {r['peak_mb'] / base['peak_mb']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
