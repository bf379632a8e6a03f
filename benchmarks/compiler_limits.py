"""Whole-process time of mtl-make-config on large and hostile inputs (issue 11, items 13, 14).

Prints, for each case, the median wall time of ``mtl-make-config`` in a subprocess (and its
exit code), beside the target:

- 3000 unresolved placeholders in a base config: exit 2, first 20 listed (target < 1 s);
- a valid 50 MB base config (1.3 M mapping entries): exit 0 (target <= 5 s);
- a 50 MB maker whose last line is an unknown key: exit 2 (target <= 2 s);
- libyaml floor: ``yaml.load`` with the C loader of the same 50 MB base, in-process, for scale.

Usage: python benchmarks/compiler_limits.py [--runs N] [--mb 50]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers import BASE, Project  # noqa: E402


def timed(cmd: list[str], runs: int) -> tuple[str, int, int]:
    """("wall s (cpu s)" medians, exit code, stderr length) of a command.

    CPU time (user + system of the child) is printed beside wall time: on a shared machine
    it is the steadier of the two.
    """
    walls, cpus, code, err = [], [], 0, 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        code, err = result.returncode, len(result.stderr)
    return f"{statistics.median(walls):.2f} s (cpu {statistics.median(cpus):.2f} s)", code, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=int, default=50, help="size of the large inputs")
    args = parser.parse_args()
    exe = shutil.which("mtl-make-config") or str(Path(sys.executable).parent / "mtl-make-config")
    entries = args.mb * 1_000_000 // 38
    base_text = yaml.safe_dump(BASE, sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        maker = project.standard()
        out = str(Path(tmp) / "out.yaml")

        project.write(
            "configs/base.yaml",
            base_text + "many:\n" + "".join(f"  k{i}: ${{missing_{i}}}\n" for i in range(3000)),
        )
        t, code, err = timed([exe, str(maker), "-o", out, "-q"], args.runs)
        print(
            f"3000 unresolved placeholders: {t}, exit {code}, {err} bytes of error "
            "(target < 1 s, exit 2)"
        )

        big = (
            base_text
            + "big:\n"
            + "".join(f"  key_{i}: value_{i}_abcdefghij\n" for i in range(entries))
        )
        path = project.write("configs/base.yaml", big)
        size = path.stat().st_size / 1e6
        t, code, _ = timed([exe, str(maker), "-o", out, "-q"], args.runs)
        print(f"valid {size:.0f} MB base: {t}, exit {code} (target <= 5 s, exit 0)")
        start, cpu = time.perf_counter(), time.process_time()
        yaml.load(big, Loader=yaml.CSafeLoader)
        print(
            f"  for scale, yaml.load(CSafeLoader) of that base alone: "
            f"{time.perf_counter() - start:.2f} s (cpu {time.process_time() - cpu:.2f} s)"
        )

        project.write("configs/base.yaml", BASE)
        text = (
            maker.read_text()
            + "local_overrides:\n  extra:\n"
            + "".join(f"    key_{i}: value_{i}_abcdefgh\n" for i in range(entries))
            + "unknown_key: 1\n"
        )
        maker.write_text(text)
        size = maker.stat().st_size / 1e6
        t, code, _ = timed([exe, str(maker), "-o", out, "-q"], args.runs)
        print(
            f"{size:.0f} MB maker, unknown key on its last line: {t}, exit {code} "
            "(target <= 2 s, exit 2)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
