"""Where and how a command runs: the ``--device`` choice every command spells the same way,
the run-level torch settings (``run.num_threads``, ``run.float32_matmul_precision``,
``run.compile``) and the message for a CUDA out-of-memory error. torch is imported where it
is used, so a command's ``--help`` stays fast."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from runtime.config_errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when a GPU is available, else cpu)"
MatmulPrecision = Literal["highest", "high", "medium"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None, flag: str = "--device") -> torch.device:
    """The device for ``name`` (``None``/``auto``: CUDA when available); a device this
    machine does not have is bad input (exit 2), never a traceback later."""
    import torch

    if name is None or name == "auto":
        return torch.device(default_device())
    match = _DEVICE.match(name.strip())
    if match is None:
        raise ConfigError(f"{flag} {name}: expected cpu, cuda, cuda:N or auto")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise ConfigError(f"{flag} {name}: cpu takes no index; use cpu")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{flag} {name}: no CUDA device is available (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'}); use {flag} cpu"
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise ConfigError(
            f"{flag} {name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        )
    return torch.device("cuda", int(index) if index is not None else 0)


def trainer_device(device: torch.device) -> dict[str, Any]:
    """Lightning Trainer arguments that run on exactly ``device``."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def check_accelerator(accelerator: Any, where: str) -> None:
    """Refuse a config that asks for a GPU on a machine without one (exit 2)."""
    import torch

    if str(accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"{where}trainer.accelerator is {accelerator!r} but no CUDA device is available "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use "
            "--trainer.accelerator=cpu (or auto), or --device cpu"
        )


def apply_run_settings(run: Mapping[str, Any] | None) -> None:
    """Process-wide torch settings of a run config's ``run:`` section."""
    import torch

    run = run or {}
    if run.get("num_threads"):
        torch.set_num_threads(int(run["num_threads"]))
    if run.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(run["float32_matmul_precision"]))


def compile_model(module: torch.nn.Module, setting: bool | str | None) -> None:
    """``torch.compile`` the module's ``model`` (else the module) in place, for ``run.compile``
    (``true`` or a mode). ``nn.Module.compile`` keeps the parameter names, so checkpoints
    stay loadable without compiling (no ``_orig_mod.`` prefixes)."""
    if not setting:
        return
    from torch import nn

    from runtime.protocols import inner_model

    inner = inner_model(module)
    target = inner if isinstance(inner, nn.Module) else module
    mode = None if setting is True or setting == "default" else str(setting)
    target.compile(mode=mode)


class DeviceMemoryError(ConfigError):
    """The device ran out of memory (bad input: a batch or model too large for it)."""


def out_of_memory_message(device: str, batch_sizes: Mapping[str, int] | None) -> str:
    """What to say for ``torch.OutOfMemoryError``: the batch sizes and what to try."""
    sizes = ", ".join(f"{k}: {v}" for k, v in (batch_sizes or {}).items()) or "unknown"
    return (
        f"{device} ran out of memory (batch sizes: {sizes}). Try smaller batch sizes "
        "(data.init_args.batch_sizes.<dataset>), trainer.precision=bf16-mixed, "
        "trainer.accumulate_grad_batches=N to keep the effective batch, a smaller model, or "
        "more GPUs (--trainer.devices=N --trainer.strategy=ddp); close other processes on "
        "the GPU (nvidia-smi). Setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
        "helps when memory is fragmented."
    )
