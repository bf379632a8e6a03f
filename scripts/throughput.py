"""``mtl-throughput``: how fast a run's model infers and trains, per task, batch size and dtype.

The model is built from the run config with the runtime's own loading code
(:func:`runtime.rundir.load_run`; the run's checkpoint for a run directory, random weights for
a config file) and fed batches shaped like its data modules' (synthetic by default), or the
run's own training DataLoader's batches (``--real-data``: loading and the copy to the device
are then timed too). Each row is measured by :mod:`scripts.bench_row`: on CPU in a fresh
process per row, so no row inherits another's peak memory; on CUDA in this process with the
allocator's peak reset. Heavy imports happen inside functions so ``--help`` is fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError, did_you_mean
from compiler.files import check_output
from runtime.protocols import NamesTasks, inner_model
from scripts.common import bad_input_exits, device_option, json_option, note, write_json_result

PROG = "mtl-throughput"
MODES = ("infer", "train", "both")
DTYPES = ("float32", "bfloat16", "float16")
#: modules the CPU rows' process server imports once, so each row's process starts warm
PRELOAD = ["scripts.bench_row", "runtime.rundir", "runtime.module", "jsonargparse"]
EPILOG = """\b
Examples:
  mtl-throughput runs/quickstart --batch-sizes 1,16,64 --mode both
  mtl-throughput quickstart.run.yaml --mode infer --dtype bfloat16 --task parity
  mtl-throughput runs/quickstart --device cuda --compile --json bench.json
  mtl-throughput runs/quickstart --real-data --iters 50 --warmup 10 --threads 1

\b
Train rows time forward, the task's own loss, backward and the run's optimizer step
(configure_optimizers; the LR scheduler is not stepped). Data loading is timed only with
--real-data, which takes each step's batch from the run's own DataLoader.
"""


def _note(message: str) -> None:
    note(PROG, message)


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,16,64"`` -> ``[1, 16, 64]``; anything else is bad input."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch-sizes needs positive integers like 1,16,64, got {text!r}")
    return list(dict.fromkeys(sizes))


def check_device(device: str | None, dtype: str, modes: list[str]) -> str:
    """The device to measure on (``cpu`` or ``cuda:N``); combinations this machine cannot
    run are refused before anything is built."""
    import torch

    from runtime.hardware import resolve_device

    chosen = resolve_device(device)
    device = "cpu" if chosen.type == "cpu" else str(chosen)
    if device == "cpu" and dtype == "float16" and "train" in modes:
        raise ConfigError(
            "--dtype float16 training is not supported on CPU (no fp16 gradient scaling "
            "there); use --dtype bfloat16, --mode infer, or --device cuda"
        )
    if device != "cpu" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--dtype bfloat16: {torch.cuda.get_device_name()} does not support it")
    return device


def choose_tasks(available: list[str], wanted: tuple[str, ...]) -> list[str]:
    for task in wanted:
        if task not in available:
            raise ConfigError(
                f"--task {task}: the model has no such task{did_you_mean(task, available)}; "
                f"its tasks: {', '.join(available)}"
            )
    return list(wanted) or list(available)


def run_rows(specs: list[Any], samples: dict[str, Any]) -> list[dict[str, Any]]:
    """Measure every row, printing progress; CPU rows each in a fresh process."""
    from scripts.bench_row import measure_safely

    rows = []
    for i, spec in enumerate(specs, 1):
        what = f"{spec.mode} {spec.task} batch {spec.batch_size} {spec.dtype}"
        _note(f"[{i}/{len(specs)}] {what} ...")
        sample = samples[spec.task]
        row = (
            _in_fresh_process(spec, sample)
            if spec.device == "cpu"
            else measure_safely(spec, sample)
        )
        rows.append(row)
        done = f"{row['samples_per_s']:,.1f} samples/s" if not row["error"] else row["error"]
        _note(f"[{i}/{len(specs)}] {what}: {done}")
    return rows


def start_process_server() -> None:
    """Start the server the CPU rows' processes fork from; it imports :data:`PRELOAD` in the
    background (a no-op when it already runs)."""
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def _in_fresh_process(spec: Any, sample: Any) -> dict[str, Any]:
    """Run one row in a new process forked from a server that has only imported modules."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from dataclasses import asdict

    from scripts.bench_row import measure_safely

    start_process_server()
    try:
        with ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("forkserver")
        ) as pool:
            return pool.submit(measure_safely, spec, sample).result()
    except BrokenProcessPool:
        return {**asdict(spec), "error": "the row's process died (out of memory?)"}


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """The terminal table: one line per row (a failed row shows its error last)."""
    lines = [("mode", "task", "batch", "dtype", "samples/s", "ms p50", "ms p90", "peak MB")]
    for r in rows:
        lines.append(
            (
                r["mode"],
                r["task"],
                str(r["batch_size"]),
                r["dtype"],
                _fmt(r.get("samples_per_s"), ",.1f"),
                _fmt(r.get("ms_p50"), ".3f"),
                _fmt(r.get("ms_p90"), ".3f"),
                r["error"] or _fmt(r.get("peak_mem_mb"), ",.1f"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(7)]
    left = (0, 1, 3)
    return "\n".join(
        "  ".join(
            [
                *(
                    c.ljust(w) if i in left else c.rjust(w)
                    for i, (c, w) in enumerate(zip(line, widths, strict=False))
                ),
                line[7],
            ]
        )
        for line in lines
    )


def benchmark(
    target: Path, ckpt: str | None, batch_sizes: list[int], modes: list[str], dtype: str,
    device: str | None, compile_: bool, tasks: tuple[str, ...], warmup: int, iters: int,
    threads: int | None, real_data: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """(header facts, rows) for a run directory or run config."""
    from runtime.rundir import load_run
    from scripts.bench_inputs import gather_samples, shape_of
    from scripts.bench_row import RowSpec

    device = check_device(device, dtype, modes)
    if device == "cpu":
        start_process_server()  # imports while the model and data load here
    if ckpt is None:
        ckpt = "best" if target.is_dir() else "none"
    loaded = load_run(target, ckpt=None if ckpt == "none" else ckpt)
    module = loaded.module
    model = inner_model(module)
    if model is module or not isinstance(model, NamesTasks):
        raise ConfigError(
            f"{loaded.config_path}: the model is not a MultiTaskModule over a "
            "MultiTaskModel (no model.task_names); nothing to measure per task"
        )
    chosen = choose_tasks(list(model.task_names), tasks)
    _note("reading input shapes from the run's training data")
    samples = gather_samples(loaded.datamodule, chosen, 1)  # shapes; real rows: the loader
    threads = threads or (loaded.config.get("run") or {}).get("num_threads")
    params = list(module.parameters())
    facts = {
        "target": str(target),
        "checkpoint": str(loaded.checkpoint_path) if loaded.checkpoint_path else None,
        "total_params": sum(p.numel() for p in params),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "inputs": "real" if real_data else "synthetic",
        "device": device,
        "input_shapes": {t: shape_of(s) for t, s in samples.items()},
    }
    checkpoint = facts["checkpoint"]
    specs = [
        RowSpec(str(target), checkpoint, mode, task, size, dtype, device, compile_, warmup,
                iters, threads, real_data)
        for mode in modes for task in chosen for size in batch_sizes
    ]  # fmt: skip
    rows = run_rows(specs, samples)
    extra = {k: facts[k] for k in ("total_params", "trainable_params", "inputs")}
    return facts, [
        {**row, **extra, "input_shape": facts["input_shapes"][row["task"]]} for row in rows
    ]


@click.command(
    context_settings=CONTEXT_SETTINGS,
    help="Measure inference and training throughput of a run's model (TARGET: a run "
    "directory, whose checkpoint is loaded, or a run config, random weights) over batch "
    "sizes, per task, with warm-up, median/p90 timings and peak memory per row.",
    epilog=EPILOG,
)
@version_option("mtl-throughput")
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--batch-sizes", default="1,16,64", show_default=True, help="Comma-separated batch sizes."
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="both",
    show_default=True,
    help="infer (forward), train (forward, loss, backward, optimizer step) or both.",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="float32",
    show_default=True,
    help="Autocast dtype (float32: no autocast).",
)
@device_option
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model first.")
@click.option(
    "--task",
    "tasks",
    multiple=True,
    help="Only this task (repeatable); default: each task, one row per task.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Untimed iterations before timing.",
)
@click.option(
    "--iters",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed iterations per row.",
)
@click.option(
    "--ckpt",
    default=None,
    help="best, last (run directory), a checkpoint path, or none (random weights); "
    "default: best for a run directory, none for a run config.",
)
@click.option(
    "--real-data",
    is_flag=True,
    help="Take each step's batch from the run's own training DataLoader (workers, "
    "pinning and the copy to the device are timed).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: the run's run.num_threads, else torch's).",
)
@json_option("Also write the rows as a JSON list here.")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
def main(
    target: Path,
    batch_sizes: str,
    mode: str,
    dtype: str,
    device: str | None,
    compile_: bool,
    tasks: tuple[str, ...],
    warmup: int,
    iters: int,
    ckpt: str | None,
    real_data: bool,
    threads: int | None,
    json_path: Path | None,
    force: bool,
) -> None:
    with bad_input_exits(PROG):
        sizes = parse_batch_sizes(batch_sizes)
        if json_path is not None:
            check_output(json_path, flag="--json", replace=force)
        modes = ["infer", "train"] if mode == "both" else [mode]
        facts, rows = benchmark(
            target,
            ckpt,
            sizes,
            modes,
            dtype,
            device,
            compile_,
            tasks,
            warmup,
            iters,
            threads,
            real_data,
        )
    click.echo(
        f"{facts['target']} ({facts['checkpoint'] or 'random weights'}) on {facts['device']}; "
        f"parameters: {facts['total_params']:,} total, {facts['trainable_params']:,} "
        f"trainable; inputs: {facts['inputs']}"
    )
    click.echo(table(rows))
    if json_path is not None:
        with bad_input_exits(PROG):
            write_json_result(PROG, json_path, rows)
    if any(row["error"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
