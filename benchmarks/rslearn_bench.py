"""Compile speed of the rslearn dialect on the compatibility corpus, against libyaml's floor.

For every corpus maker (``../shared/rslearn_corpus/configs/*/<maker>.yaml`` with an
``expected/OUT_<maker>.yaml``) prints:

- compile: in-process ``compile_maker`` (dialect auto-detected, as the CLI does) plus
  rendering the output text, median of N runs;
- floor: what libyaml alone needs for the same files: parse every input with
  ``yaml.CSafeLoader`` (maker, base, dataset files, dataset-info file) and dump the run config
  with ``yaml.CSafeDumper``, median of N runs;
- ratio: compile / floor (the target is <= 2);
- process: whole ``mtl-make-config MAKER -o OUT -q`` in a subprocess, median of M runs
  (the target is < 100 ms), with its CPU time beside it;
- startup: ``python -c "import yaml, hashlib, pathlib"`` timed the same
  way, interleaved with the CLI runs: the part of the process time no compiler code can save;
- process floor: a whole ``python`` process that imports yaml, parses the same input files
  with libyaml and dumps the same run config (read back with ``marshal``, which costs no
  import), interleaved with the CLI runs; process ratio = process / process floor (the
  target is <= 1.6), in wall time and in CPU time (user + system of the child: on a loaded,
  shared machine wall times also count waiting for a core, CPU times do not).

Runs alternate between the timed functions, so load from other processes on a shared machine
hits them alike. The ``compiler`` package is byte-compiled first (``compileall``), as it is
after any install or first run; otherwise an environment with ``PYTHONDONTWRITEBYTECODE``
and an editable install would recompile its source at every start (about 14 ms more).

Usage: python benchmarks/rslearn_bench.py [--runs N] [--process-runs M] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import gc
import marshal
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "rslearn_corpus"
#: What any such CLI pays before its own code: the interpreter and its unavoidable imports.
STARTUP = "import yaml, hashlib, pathlib"
#: The whole-process floor: start python, import yaml, parse the inputs, dump the run config.
PROCESS_FLOOR = (
    "import marshal, sys, yaml\n"
    "L, D = yaml.CSafeLoader, yaml.CSafeDumper\n"
    "for p in sys.argv[2:]:\n"
    "    yaml.load(open(p, encoding='utf-8').read(), Loader=L)\n"
    "run = marshal.loads(open(sys.argv[1], 'rb').read())\n"
    "yaml.dump(run, Dumper=D, sort_keys=False, default_flow_style=False, allow_unicode=True,"
    " width=4096)\n"
)


def makers(corpus: Path) -> list[Path]:
    return [
        m
        for m in sorted((corpus / "configs").glob("*/*.yaml"))
        if (m.parent / "expected" / f"OUT_{m.stem}.yaml").is_file()
    ]


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, cpu) seconds of one call; cpu counts this process and finished children."""
    gc.collect()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    w1, c1 = time.perf_counter(), time.process_time()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return w1 - w0, (c1 - c0) + children


def interleaved(fns: list[Callable[[], object]], runs: int) -> list[tuple[float, float]]:
    """Median (wall ms, cpu ms) of each function, run in alternating order round by round.

    Alternating keeps the comparison fair on a shared machine: a burst of load from other
    processes hits every function alike instead of one of them.
    """
    for fn in fns:
        fn()  # warm caches and imports
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for i in range(runs):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for j in order:
            times[j].append(_timed(fns[j]))
    return [
        (statistics.median(w for w, _ in ts) * 1000, statistics.median(c for _, c in ts) * 1000)
        for ts in times
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="in-process runs per maker")
    parser.add_argument("--process-runs", type=int, default=15, help="subprocess runs per maker")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()

    import compileall

    import compiler
    from compiler.build import compile_maker

    compileall.compile_dir(Path(compiler.__file__).parent, quiet=1)

    found = makers(args.corpus)
    if not found:
        print(f"no corpus makers under {args.corpus / 'configs'}", file=sys.stderr)
        return 1
    exe = shutil.which("mtl-make-config") or str(Path(sys.executable).parent / "mtl-make-config")
    loader, dumper = yaml.CSafeLoader, yaml.CSafeDumper
    print(
        f"{'maker':<28} {'compile ms':>10} {'floor ms':>9} {'ratio':>6} "
        f"{'process ms':>11} {'(cpu ms)':>9} {'startup ms':>11} {'proc floor':>11} "
        f"{'(cpu ms)':>9} {'proc ratio':>10} {'(cpu)':>6}"
    )
    startup = [sys.executable, "-c", STARTUP]
    worst_ratio = worst_process = worst_proc_ratio = worst_cpu_ratio = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.yaml"
        for maker in found:
            compiled = compile_maker(maker, output=out)
            paths = [src.path for src in compiled.inputs]
            run = compiled.run

            def floor(paths: list[Path] = paths, run: dict = run) -> None:
                for path in paths:
                    yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
                yaml.dump(
                    run,
                    Dumper=dumper,
                    sort_keys=False,
                    default_flow_style=False,
                    allow_unicode=True,
                    width=4096,
                )

            def ours(maker: Path = maker) -> None:
                compile_maker(maker, output=out).text()

            (t_ours, _), (t_floor, _) = interleaved([ours, floor], args.runs)
            cmd = [exe, str(maker), "-o", str(out), "-q"]
            frozen = Path(tmp) / "run.marshal"
            frozen.write_bytes(marshal.dumps(run))
            floor_cmd = [sys.executable, "-c", PROCESS_FLOOR, str(frozen), *map(str, paths)]
            (t_proc, c_proc), (t_start, _), (t_pfloor, c_pfloor) = interleaved(
                [
                    lambda cmd=cmd: subprocess.run(cmd, check=True),
                    lambda: subprocess.run(startup, check=True),
                    lambda cmd=floor_cmd: subprocess.run(
                        cmd, check=True, stdout=subprocess.DEVNULL
                    ),
                ],
                args.process_runs,
            )
            ratio = t_ours / t_floor
            proc_ratio = t_proc / t_pfloor
            cpu_ratio = c_proc / c_pfloor
            worst_ratio = max(worst_ratio, ratio)
            worst_process = max(worst_process, t_proc)
            worst_proc_ratio = max(worst_proc_ratio, proc_ratio)
            worst_cpu_ratio = max(worst_cpu_ratio, cpu_ratio)
            name = f"{maker.parent.name}/{maker.stem}"
            print(
                f"{name:<28} {t_ours:>10.2f} {t_floor:>9.2f} {ratio:>6.2f} "
                f"{t_proc:>11.1f} {c_proc:>9.1f} {t_start:>11.1f} {t_pfloor:>11.1f} "
                f"{c_pfloor:>9.1f} {proc_ratio:>10.2f} {cpu_ratio:>6.2f}"
            )
    print(
        f"worst ratio {worst_ratio:.2f} (target <= 2), "
        f"worst process median {worst_process:.1f} ms (target < 100), "
        f"worst process ratio {worst_proc_ratio:.2f} (cpu {worst_cpu_ratio:.2f}; target <= 1.6); "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
