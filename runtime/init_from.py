"""Starting a run from a trained multitask run's weights ("isolate fine-tune").

``mtl-make-config`` compiles the maker key ``finetune_from`` into the module's ``init_from``
(``{run_dir, checkpoint, task_init}``); ``MultiTaskModule`` applies it when a fit starts fresh
(never on ``--resume``: the run's own checkpoint holds everything then), resolving the
checkpoint in the source run directory by :meth:`runtime.rundir.RunDir.checkpoint`'s rule.
What is copied:

* shared tensors (encoder, trunk, adapters' hypernetwork, ...) whose names match; peft's
  ``base_layer`` wrapping is looked through, so static LoRA can be added at fine-tune time;
* decoders that serve the same tasks in both runs (other decoders start fresh);
* rows of per-task tables (modules declaring ``per_task_parameters``) by task name; a new
  task named in ``task_init`` starts from that existing task's row.

Tensors the source lacks (new adapters, a new task's decoder) keep their initialisation, and
adapters' on/off switches follow this run's config, not the source's. A shared tensor of
another shape is an error, as is a checkpoint sharing nothing with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from runtime.config_errors import ConfigError
from runtime.model import per_task_tensors

MODEL_PREFIX = "model."
#: checkpoint keys written by ``MultiTaskModule.on_save_checkpoint``
TASKS_KEY = "task_names"
ROUTING_KEY = "task_to_decoder"


@dataclass
class InitFrom:
    """Initial weights from a trained run's checkpoint.

    Args:
        run_dir: the source run directory.
        checkpoint: which of its checkpoints: ``best``, ``last``, ``step-<N>`` (resolved when
            the fit starts, see :meth:`runtime.rundir.RunDir.checkpoint`), or a checkpoint
            path (the only form without ``run_dir``, as configs compiled before it had).
        task_init: new task -> existing task of the source whose per-task rows (task
            embedding) it starts from.
    """

    checkpoint: str = "best"
    task_init: dict[str, str] = field(default_factory=dict)
    run_dir: str | None = None

    def checkpoint_path(self) -> Path:
        """The source checkpoint file, a ``ConfigError`` naming ``init_from`` if there is none."""
        from runtime.rundir import RunDir, resolve_checkpoint

        if self.run_dir is not None and not RunDir(self.run_dir).config.is_file():
            raise ConfigError(
                f"init_from.run_dir: {self.run_dir} is not a run directory (no "
                f"{RunDir.CONFIG}; train the source run first)"
            )
        try:
            return resolve_checkpoint(self.run_dir, self.checkpoint)
        except ConfigError as err:
            raise ConfigError(f"init_from.checkpoint: {err}") from None


@dataclass
class InitReport:
    """What was copied (from ``source``), for the run's log."""

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    rows: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        rows = ", ".join(f"{new} <- {old}" for new, old in self.rows.items()) or "none"
        fresh = ", ".join(self.fresh[:6]) + (" ..." if len(self.fresh) > 6 else "")
        return (
            f"init_from {self.source}: {len(self.loaded)} tensors loaded; per-task rows: {rows}; "
            f"kept fresh: {fresh or 'none'}"
        )


def _switch_buffers(model: nn.Module) -> set[str]:
    from runtime.lora import adapter_switches

    owners = {id(m) for m in adapter_switches(model)}
    return {
        f"{prefix}.enabled" if prefix else "enabled"
        for prefix, module in model.named_modules()
        if id(module) in owners
    }


def _plain(name: str) -> str:
    """A tensor name without peft's ``base_layer`` level."""
    return name.replace(".base_layer.", ".")


def _source_tasks(checkpoint: dict[str, Any], path: Path) -> list[str]:
    tasks = checkpoint.get(TASKS_KEY)
    if not isinstance(tasks, list):
        raise ConfigError(
            f"init_from: {path} does not record its task names (it was not "
            "written by this mtl-run); its per-task rows cannot be matched"
        )
    return tasks


def _check_task_init(
    model: Any, task_init: dict[str, str], source_tasks: list[str], path: Path
) -> None:
    unknown_new = sorted(set(task_init) - set(model.task_names))
    if unknown_new:
        raise ConfigError(
            f"init_from.task_init names {unknown_new}, which are not tasks of "
            f"this run ({', '.join(model.task_names)})"
        )
    unknown_old = sorted(set(task_init.values()) - set(source_tasks))
    if unknown_old:
        raise ConfigError(
            f"init_from.task_init starts from {unknown_old}, which are not tasks "
            f"of {path} ({', '.join(source_tasks)})"
        )


def initial_state(
    model: Any, checkpoint: dict[str, Any], init: InitFrom, path: Path
) -> tuple[dict[str, Tensor], InitReport]:
    """The tensors to copy into ``model`` (a ``MultiTaskModel``) and a report."""
    source = {
        k[len(MODEL_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }
    by_plain = {_plain(k): k for k in source}
    per_task = per_task_tensors(model)
    source_tasks = _source_tasks(checkpoint, path) if per_task or init.task_init else []
    _check_task_init(model, init.task_init, source_tasks, path)
    routing = checkpoint.get(ROUTING_KEY)
    served_before = (
        {d: {t for t, dd in routing.items() if dd == d} for d in routing.values()}
        if isinstance(routing, dict)
        else None
    )
    served_now = {
        d: {t for t, dd in model.task_to_decoder.items() if dd == d} for d in model.decoders
    }
    report = InitReport()
    out: dict[str, Tensor] = {}
    switches = _switch_buffers(model)
    for name, target in model.state_dict().items():
        key = by_plain.get(_plain(name))
        if name in switches:
            continue  # adapters on/off: this run's config (and stages) decide
        if key is None:
            report.fresh.append(name)
            continue
        tensor = source[key]
        if name in per_task:
            out[name] = _rows(name, target, tensor, model.task_names, source_tasks, init, report)
            report.loaded.append(name)
            continue
        if name.startswith("decoders."):
            decoder = name.split(".")[1]
            same_tasks = served_before is None or served_before.get(decoder) == served_now[decoder]
            if not same_tasks or tensor.shape != target.shape:
                report.fresh.append(name)
                continue
        elif tensor.shape != target.shape:
            raise ConfigError(
                f"init_from: {path} holds '{key}' with shape {list(tensor.shape)} but this "
                f"model's '{name}' is {list(target.shape)}: the shared parts must be built "
                "the same way as in the source run"
            )
        out[name] = tensor
        report.loaded.append(name)
    if not any(not n.startswith("decoders.") for n in report.loaded):
        raise ConfigError(
            f"init_from: {path} shares no tensor with this model's encoder or "
            "trunk; is it a checkpoint of the run you meant?"
        )
    return out, report


def _rows(
    name: str,
    target: Tensor,
    tensor: Tensor,
    tasks: list[str],
    source_tasks: list[str],
    init: InitFrom,
    report: InitReport,
) -> Tensor:
    if tensor.shape[1:] != target.shape[1:] or tensor.shape[0] != len(source_tasks):
        raise ConfigError(
            f"init_from: per-task tensor '{name}' has shape {list(tensor.shape)} "
            f"in the checkpoint, which does not fit {list(target.shape)}"
        )
    rows = target.detach().clone()
    for i, task in enumerate(tasks):
        start = init.task_init.get(task, task if task in source_tasks else None)
        if start is not None:
            rows[i] = tensor[source_tasks.index(start)]
            if start != task:
                report.rows[task] = start
    return rows


def apply_init_from(model: nn.Module, init: InitFrom) -> InitReport:
    """Copy a trained run's weights into ``model`` in place (see the module docstring)."""
    from runtime.rundir import read_checkpoint

    path = init.checkpoint_path()
    state, report = initial_state(model, read_checkpoint(path), init, path)
    report.source = str(path)
    current = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            current[name].copy_(tensor)
    return report
