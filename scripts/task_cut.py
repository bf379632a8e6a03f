"""Cutting one task out of a run with merged heads: its single-task config and weights.

The weights are cut by comparing shapes, not by knowing head classes: the single-task model is
built from the cut config, and every tensor whose shape differs from the merged one must differ
only where the merged size is the decoder's ``num_outputs`` and the new size is the task's own,
so the task's block ``[offset : offset + num_outputs]`` is kept along that dimension (dim 0 of a
``Linear`` weight and bias, the channel dim of a conv kernel, both dims of a label-by-label
table). Tensors of modules that declare ``per_task_parameters`` (rows indexed by the model's
``task_names``, e.g. a task-embedding table) keep the rows of the kept task; per-task adapters
(``runtime.adapters.TaskAdapters``, stored by task name) keep the kept task's only. Everything
else is copied unchanged, and the result must load strictly into the single-task model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from compiler.errors import ConfigError
from compiler.keypaths import DATA_ARGS, DECODERS, MODEL_ARGS, TASKS
from compiler.tree import get_path, set_path
from runtime.model import per_task_tensors
from runtime.protocols import SizedHead

#: prefix of the MultiTaskModel's tensors in the LightningModule's state dict
MODEL_PREFIX = "model."


@dataclass
class TaskCut:
    """Where one task sits in its run: decoder, label block, and the datasets carrying it."""

    task: str
    decoder: str
    offset: int
    num_outputs: int
    decoder_outputs: int
    datasets: list[str] = field(default_factory=list)


def merged_decoders(config: dict[str, Any]) -> dict[str, list[str]]:
    """Decoder -> tasks, for decoders that serve several tasks or hand out label slices."""
    routing = get_path(config, (*MODEL_ARGS, "decoder_to_target")) or {}
    offsets = get_path(config, (*MODEL_ARGS, "task_label_offsets")) or {}
    if not isinstance(routing, dict):
        return {}
    return {
        decoder: list(tasks)
        for decoder, tasks in routing.items()
        if isinstance(tasks, list) and (len(tasks) > 1 or any(t in offsets for t in tasks))
    }


def task_cuts(model: Any, dataset_tasks: dict[str, list[str]]) -> dict[str, TaskCut]:
    """A ``TaskCut`` for every task of a live ``MultiTaskModel``."""
    cuts = {}
    for task, decoder in model.task_to_decoder.items():
        head = model.decoders[decoder][-1]
        total = head.num_outputs if isinstance(head, SizedHead) else None
        offset, width = model.task_slices.get(task, (0, total))
        if total is None or width is None:
            raise ConfigError(
                f"the head of decoder '{decoder}' ({type(model.decoders[decoder][-1]).__name__}) "
                "has no num_outputs, so its labels cannot be cut per task"
            )
        carriers = [d for d, tasks in dataset_tasks.items() if task in tasks]
        cuts[task] = TaskCut(task, decoder, offset, width, total, carriers)
    return cuts


# ---- config --------------------------------------------------------------------------------
def single_task_config(
    config: dict[str, Any], cut: TaskCut, dataset_tasks: dict[str, list[str]]
) -> dict[str, Any]:
    """The run config restricted to one task: its decoder (named after the task, head cut to
    the task's outputs), its task definition and the datasets carrying it (only it)."""
    out = copy.deepcopy(config)
    decoders = get_path(out, DECODERS)
    modules = copy.deepcopy(decoders[cut.decoder])
    head = modules[-1]
    if not isinstance(head, dict) or "num_outputs" not in (head.get("init_args") or {}):
        raise ConfigError(
            f"the head of decoder '{cut.decoder}' has no init_args.num_outputs in the run config"
        )
    head["init_args"]["num_outputs"] = cut.num_outputs
    out = set_path(out, DECODERS, {cut.task: modules})
    model_args = get_path(out, MODEL_ARGS)
    for key in ("decoder_to_target", "task_label_offsets"):
        model_args.pop(key, None)
    _restrict_adapters(model_args, cut.task)
    out = set_path(out, TASKS, {cut.task: get_path(config, (*TASKS, cut.task))})
    out = _restrict_data(out, cut, dataset_tasks)
    return _restrict_monitor(out, cut.task)


def _restrict_adapters(model_args: dict[str, Any], task: str) -> None:
    """Per-task adapters listed by task keep only the kept task's (its weights are kept by
    name; the other tasks' adapters are dropped)."""
    adapters = model_args.get("task_adapters")
    args = adapters.get("init_args") if isinstance(adapters, dict) else None
    if isinstance(args, dict) and isinstance(args.get("tasks"), list):
        args["tasks"] = [t for t in args["tasks"] if t == task]


def _restrict_data(
    config: dict[str, Any], cut: TaskCut, dataset_tasks: dict[str, list[str]]
) -> dict[str, Any]:
    """Keep the datasets carrying the task; per-dataset maps keep only their entries."""
    if not cut.datasets:
        raise ConfigError(f"no dataset of the run carries task '{cut.task}'")
    args = get_path(config, DATA_ARGS)
    if not isinstance(args, dict):
        raise ConfigError("the run config has no data.init_args")
    names = set(dataset_tasks)
    for key, value in list(args.items()):
        if isinstance(value, dict) and value and set(value) <= names:
            args[key] = {k: v for k, v in value.items() if k in cut.datasets}
    others = {d: [t for t in dataset_tasks[d] if t != cut.task] for d in cut.datasets}
    if "dataset_tasks" in args:
        args["dataset_tasks"] = {d: [cut.task] for d in cut.datasets}
    elif any(others.values()):
        detail = ", ".join(f"{d} ({', '.join(ts)})" for d, ts in others.items() if ts)
        raise ConfigError(
            f"task '{cut.task}': datasets {detail} also carry other tasks and the data module "
            f"{get_path(config, ('data', 'class_path'))} takes no dataset_tasks to drop them"
        )
    return config


def _restrict_monitor(config: dict[str, Any], task: str) -> dict[str, Any]:
    """A ``run.monitor`` on another task's metric falls back to ``val/score`` (max)."""
    run = config.get("run")
    monitor = run.get("monitor") if isinstance(run, dict) else None
    parts = monitor.split("/") if isinstance(monitor, str) else []
    if len(parts) == 3 and parts[1] != task:
        run["monitor"], run["mode"] = "val/score", "max"
    return config


# ---- weights -------------------------------------------------------------------------------
def cut_state_dict(
    old: dict[str, Tensor], old_model: Any, new_module: nn.Module, cut: TaskCut
) -> dict[str, Tensor]:
    """The single-task module's state dict, taken from the merged module's ``old`` one."""
    new_model = new_module.model
    rows = torch.tensor([old_model.task_names.index(t) for t in new_model.task_names])
    per_task = {MODEL_PREFIX + n for n in per_task_tensors(old_model)}
    renamed = f"{MODEL_PREFIX}decoders.{cut.task}."
    source_prefix = f"{MODEL_PREFIX}decoders.{cut.decoder}."
    out: dict[str, Tensor] = {}
    for key, template in new_module.state_dict().items():
        source = source_prefix + key[len(renamed) :] if key.startswith(renamed) else key
        if source not in old:
            raise ConfigError(
                f"the checkpoint has no tensor '{source}' for '{key}' of the "
                f"single-task model of '{cut.task}'"
            )
        tensor = old[source]
        if source in per_task:
            tensor = tensor.index_select(0, rows)
        elif source.startswith(source_prefix):
            tensor = _label_block(source, tensor, template.shape, cut)
        if tensor.shape != template.shape:
            raise ConfigError(
                f"cannot cut '{source}' for task '{cut.task}': shape {tuple(tensor.shape)} "
                f"does not fit {tuple(template.shape)} (a per-task tensor whose module does not "
                "declare per_task_parameters?)"
            )
        out[key] = tensor.clone()
    return out


def _label_block(name: str, tensor: Tensor, shape: torch.Size, cut: TaskCut) -> Tensor:
    """Keep the task's label block along every dim that shrank from the decoder's outputs."""
    if tensor.dim() != len(shape):
        return tensor
    for dim, (was, now) in enumerate(zip(tensor.shape, shape, strict=True)):
        if was == now:
            continue
        if (was, now) != (cut.decoder_outputs, cut.num_outputs):
            raise ConfigError(
                f"cannot cut '{name}' for task '{cut.task}': dim {dim} goes from {was} to {now}, "
                f"not from the decoder's {cut.decoder_outputs} outputs to the task's "
                f"{cut.num_outputs}"
            )
        tensor = tensor.narrow(dim, cut.offset, cut.num_outputs)
    return tensor
