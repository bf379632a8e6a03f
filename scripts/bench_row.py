"""One ``mtl-throughput`` measurement: build the run's module, time one (mode, task, batch
size, dtype) and read the peak memory.

The module is rebuilt by :func:`runtime.rundir.load_run` for every row, so rows never share
optimizer state, compiled graphs or allocator peaks. On CPU each row runs in a fresh process
(see :func:`scripts.throughput.run_rows`) and its peak is that process's peak resident set
size; on CUDA it is the caching allocator's peak, reset before the model is moved there.
Timing: ``warmup`` untimed iterations, then ``iters`` iterations each timed on its own, with
``torch.cuda.synchronize()`` before every clock read on CUDA. With ``real_data`` each
iteration also takes the next batch from the run's own DataLoader and copies it to the device
(``non_blocking`` from pinned memory on CUDA), so loading is part of the time.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device

from runtime.config_errors import first_line
from scripts.bench_inputs import Batch, loader_batches, synthetic_batch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class RowSpec:
    """What one row measures (picklable: it crosses into the row's process)."""

    target: str
    checkpoint: str | None
    mode: str
    task: str
    batch_size: int
    dtype: str
    device: str
    compile: bool
    warmup: int
    iters: int
    threads: int | None
    real_data: bool


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), in MiB."""
    with Path("/proc/self/statm").open() as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    """Free what earlier rows left (reference cycles included) before a CUDA peak is read."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """``self.log`` outside a Trainer warns on every call; the values are not needed here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
        yield


def run_optimizer(module: Any) -> torch.optim.Optimizer:
    """The run's own optimizer from ``configure_optimizers``, its LR scheduler left out (a
    scheduler may need a Trainer for its step count, and stepping it costs nothing here)."""
    saved = getattr(module, "scheduler_factory", None)
    if saved is not None:
        module.scheduler_factory = None
    try:
        configured = module.configure_optimizers()
    finally:
        if saved is not None:
            module.scheduler_factory = saved
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    while isinstance(configured, (list, tuple)):
        configured = configured[0]
    return configured


Batches = Batch | Callable[[], Batch]
"""One batch used for every step, or where each step takes its next batch from."""


def _next(batches: Batches) -> Batch:
    return batches() if callable(batches) else batches


def _infer_step(
    module: Any, batches: Batches, task: str, spec: RowSpec, device: torch.device
) -> Callable[[int], None]:
    module.eval()

    def step(_: int) -> None:
        batch = _next(batches)
        with torch.inference_mode(), _autocast(device, spec.dtype):
            module(batch["inputs"], [task])

    return step


def _train_step(
    module: Any, batches: Batches, task: str, spec: RowSpec, device: torch.device
) -> Callable[[int], None]:
    """Forward + the task's own loss (``training_step``), backward, optimizer step. float16
    uses a GradScaler as Lightning's 16-mixed does; otherwise the module's ``optimizer_step``
    hook runs the step (so the runtime's weight EMA, when configured, is updated too)."""
    module.train()
    optimizer = run_optimizer(module)
    scaler = torch.amp.GradScaler(device.type) if spec.dtype == "float16" else None

    def step(i: int) -> None:
        batch = _next(batches)
        with _autocast(device, spec.dtype), _quiet_logging():
            loss = module.training_step(batch, i)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            module.optimizer_step(0, i, optimizer, lambda: None)
        optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(
    step: Callable[[int], None], warmup: int, iters: int, device: torch.device
) -> list[float]:
    """Seconds per timed iteration, after ``warmup`` untimed ones."""
    for i in range(warmup):
        step(i)
    _sync(device)
    times = []
    for i in range(warmup, warmup + iters):
        start = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float], batch_size: int) -> dict[str, float]:
    """Median and p90 milliseconds; samples/s from the median."""
    ms = np.asarray(times) * 1000.0
    p50, p90 = (float(v) for v in np.percentile(ms, [50, 90]))
    return {
        "samples_per_s": batch_size * 1000.0 / p50,
        "ms_p50": p50,
        "ms_p90": p90,
        "ms_mean": float(ms.mean()),
    }


def measure(spec: RowSpec, sample: Batch) -> dict[str, Any]:
    """Build the module, run the row, and return its report row."""
    from runtime.rundir import load_run

    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    base_mb = _rss_mb()
    loaded = load_run(spec.target, ckpt=spec.checkpoint, with_data=spec.real_data)
    module = loaded.module
    if spec.compile:
        torch.compiler.reset()  # rows in one process (CUDA) must not share compiled graphs
    if device.type == "cuda":
        _release(device)
        torch.cuda.reset_peak_memory_stats(device)
    module.to(device)
    batches: Batches
    if spec.real_data:
        source = loader_batches(loaded.datamodule, spec.task, spec.batch_size, spec.device)
        batches = lambda: move_data_to_device(next(source), device)  # noqa: E731
    else:
        batches = move_data_to_device(synthetic_batch(sample, spec.batch_size), device)
    if spec.compile:
        module.model.compile()
    build = _train_step if spec.mode == "train" else _infer_step
    times = time_steps(
        build(module, batches, spec.task, spec, device), spec.warmup, spec.iters, device
    )
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        memory = {"peak_mem_mb": peak, "peak_mem_kind": "cuda_allocator_peak"}
    else:
        memory = {
            "peak_mem_mb": _peak_rss_mb(),
            "peak_mem_kind": "process_peak_rss",
            "base_mem_mb": base_mb,
        }
    return {
        **asdict(spec),
        **summarize(times, spec.batch_size),
        **memory,
        "threads": torch.get_num_threads(),
        "error": None,
    }


def measure_safely(spec: RowSpec, sample: Batch) -> dict[str, Any]:
    """:func:`measure`, with a failure (out of memory, a compile error) reported in the row
    instead of raised, so one row does not end a sweep."""
    try:
        return measure(spec, sample)
    except Exception as exc:  # reported per row; the sweep goes on
        error = f"{type(exc).__name__}: {first_line(exc, default='')}"[:300]
    _release(torch.device(spec.device))  # the failed row's tensors, once its traceback is gone
    return {**asdict(spec), "error": error}
