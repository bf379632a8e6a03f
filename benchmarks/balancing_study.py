"""The balancing study of docs/balancing.md: every method on maker_configs/balancing.yaml
over several seeds, against single-task baselines (delta-m via mtl-compare's ``compare``),
with the cost of each method (ms per optimizer step, relative to equal weighting).

    python benchmarks/balancing_study.py --out runs/balancing_study [--seeds 0 1 2]

Runs every fit in this one process (no start-up per run); prints a table and writes
``results.json`` into --out. Full size takes about 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MAKER = REPO / "maker_configs/balancing.yaml"


def _agg(name: str, args: str = "") -> str:
    inner = f"{{class_path: torchjd.aggregation.{name}{', init_args: ' + args if args else ''}}}"
    return f"{{class_path: runtime.balancing.Aggregate, init_args: {{aggregator: {inner}}}}}"


METHODS: dict[str, str | None] = {
    "equal (sum)": None,
    "Uncertainty": "runtime.balancing.Uncertainty",
    "DWA": "runtime.balancing.DWA",
    "RandomWeighting": "runtime.balancing.RandomWeighting",
    "GeometricMean": "runtime.balancing.GeometricMean",
    "FAMO": "runtime.balancing.FAMO",
    "GradNorm": "runtime.balancing.GradNorm",
    "UPGrad": _agg("UPGrad"),
    "MGDA": _agg("MGDA"),
    "PCGrad": _agg("PCGrad"),
}


def make(out: Path, seed: int, single: bool) -> list[Path]:
    from compiler.cli import main as make_config

    target = out / (f"single-seed{seed}" if single else f"mt-seed{seed}.yaml")
    args = [str(MAKER), "-o", str(target), "-q", "--set", f"seed={seed}"]
    make_config.main(args + (["--single-task"] if single else []), standalone_mode=False)
    return sorted(target.glob("*.yaml")) if single else [target]


def fit(config: Path, run_dir: Path, balancer: str | None) -> float:
    """Runs one fit; returns milliseconds per optimizer step (wall clock of the whole fit)."""
    from runtime.cli import main as mtl_run

    args = ["fit", str(config), "--run-dir", str(run_dir), "--force"]
    if balancer:
        args.append(f"--model.init_args.balancer={balancer}")
    start = time.perf_counter()
    assert mtl_run(args) == 0, run_dir
    seconds = time.perf_counter() - start
    steps = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["global_step"]
    return 1000 * seconds / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/balancing_study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    opts = parser.parse_args(argv)
    from scripts.compare import compare, read_run

    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    baselines = []
    for seed in opts.seeds:
        for config in make(out, seed, single=True):
            run_dir = out / f"st-{config.stem}-seed{seed}"
            fit(config, run_dir, None)
            baselines.append(read_run(run_dir))
    results = {}
    for method in opts.methods:
        runs, costs = [], []
        for seed in opts.seeds:
            config = make(out, seed, single=False)[0]
            run_dir = out / f"mt-{method.split()[0]}-seed{seed}"
            costs.append(fit(config, run_dir, METHODS[method]))
            runs.append(read_run(run_dir))
        report = compare(runs, baselines)
        results[method] = {
            "delta_m": report["delta_m_pct"],
            "ms_per_step": costs,
            "tasks": {t: e["delta_pct"] for t, e in report["tasks"].items()},
        }
        print(f"{method}: delta-m {report['delta_m_pct']}", file=sys.stderr, flush=True)
    base_cost = statistics.fmean(
        results.get("equal (sum)", next(iter(results.values())))["ms_per_step"]
    )
    tasks = list(next(iter(results.values()))["tasks"])
    print(
        f"{'method':<16} {'delta-m % (mean ± sd)':>22} "
        + " ".join(f"{t:>9}" for t in tasks)
        + f" {'ms/step':>8} {'x equal':>8}"
    )
    for method, r in results.items():
        dm = r["delta_m"]
        cost = statistics.fmean(r["ms_per_step"])
        sd = dm["std"] if dm["std"] is not None else float("nan")
        print(
            f"{method:<16} {dm['mean']:>+14.2f} ± {sd:<5.2f} "
            + " ".join(f"{r['tasks'][t]:>+9.2f}" for t in tasks)
            + f" {cost:>8.1f} {cost / base_cost:>8.2f}"
        )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
