"""Compile time of generated makers with 10, 100 and 1000 dataset configs.

Each generated dataset config is the size and shape of a quickstart dataset config; heads are
merged with label merging on, so the whole pipeline runs. Prints total and per-dataset time
(median of several runs, in-process) and the growth ratio, which should stay near 1 for a
linear-cost compiler. Target: 1000 datasets in under 2 s on a 2-core machine.

    python benchmarks/compile_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_project(root: Path, n: int) -> Path:
    """Write a base, ``n`` dataset configs (from the quickstart's) and a maker; return it."""
    template = (REPO / "dataset_configs" / "digits_low.yaml").read_text()
    (root / "datasets").mkdir(parents=True)
    for i in range(n):
        text = template.replace("digits_low", f"task_{i:04d}")
        (root / "datasets" / f"task_{i:04d}.yaml").write_text(text)
    (root / "base.yaml").write_text((REPO / "base_configs" / "quickstart.yaml").read_text())
    lines = ["base_path: base.yaml", "dataset_cfgs:"]
    lines += [f"  - datasets/task_{i:04d}.yaml" for i in range(n)]
    lines += [
        "substitutions: {num_features: 64, hidden: 128, lr: 0.003}",
        "merge_options: {merge_heads: true, merge_task_labels: true}",
    ]
    maker = root / "maker.yaml"
    maker.write_text("\n".join(lines) + "\n")
    return maker


def time_compile(maker: Path, repeat: int) -> float:
    from compiler.build import compile_maker

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compile_maker(maker).text()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per size (median)")
    parser.add_argument("--sizes", default="10,100,1000", help="dataset counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'datasets':>8} {'total ms':>10} {'per dataset ms':>15} {'vs first size':>14}")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            maker = make_project(Path(tmp) / f"n{n}", n)
            total = time_compile(maker, args.repeat)
            per = total / n
            first = first or per
            print(f"{n:>8} {total * 1e3:>10.1f} {per * 1e3:>15.3f} {per / first:>13.2f}x")


if __name__ == "__main__":
    main()
