"""The maker key ``finetune_from``: start the compiled run from a trained run ("isolate
fine-tune").

::

    finetune_from:
      run_dir: ../runs/task_conditioned   # relative to the maker file
      checkpoint: best                    # best | last | a checkpoint path
      task_init: {new_task: existing_task}

compiles to the module's ``model.init_args.init_from: {checkpoint: ABSOLUTE_PATH, task_init}``,
which the runtime (``runtime.init_from``) applies when the fit starts: shared weights and the
decoders of tasks both runs have come from the checkpoint, new tasks' decoders start fresh and
a new task's embedding row starts from the named existing task's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tree import get_path, set_path
from .yamlio import Source, load_source, resolve_path

KEYS = ("run_dir", "checkpoint", "task_init")
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["run_dir"],
    "properties": {
        "run_dir": {
            "type": "string",
            "minLength": 1,
            "description": "Trained run directory (relative to this file).",
        },
        "checkpoint": {
            "type": "string",
            "minLength": 1,
            "description": "best, last, or a checkpoint path (default best).",
        },
        "task_init": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "New task -> existing task whose embedding it starts from.",
        },
    },
    "description": "Start from a trained run's weights: shared parts, decoders of tasks in "
    "both runs, task-embedding rows (isolate fine-tune).",
}
INIT_FROM = ("model", "init_args", "init_from")
_TASKS = ("model", "init_args", "tasks")
_WHERE = ("finetune_from",)


@dataclass
class FinetuneFrom:
    """A checked ``finetune_from``: the run directory resolved against the maker's folder."""

    run_dir: Path
    checkpoint: str = "best"
    task_init: dict[str, str] = field(default_factory=dict)


def load_finetune_from(src: Source, value: Any) -> FinetuneFrom:
    """Check the key's shape (files are checked when compiling)."""
    if not isinstance(value, dict):
        raise src.error(_WHERE, "must be a mapping with run_dir (and checkpoint, task_init)")
    for key in value:
        if key not in KEYS:
            raise src.error(
                (*_WHERE, key), f"unknown finetune_from key '{key}'; allowed: {', '.join(KEYS)}"
            )
    run_dir = value.get("run_dir")
    if not isinstance(run_dir, str) or not run_dir or "\0" in run_dir:
        raise src.error(
            (*_WHERE, "run_dir"),
            "finetune_from needs run_dir: a run directory (a path without NUL bytes)",
        )
    checkpoint = value.get("checkpoint", "best")
    if not isinstance(checkpoint, str) or not checkpoint or "\0" in checkpoint:
        raise src.error((*_WHERE, "checkpoint"), "must be best, last or a checkpoint path")
    task_init = value.get("task_init") or {}
    if not isinstance(task_init, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in task_init.items()
    ):
        raise src.error((*_WHERE, "task_init"), "must map new task names to existing ones")
    folder = src.path.parent
    return FinetuneFrom(resolve_path(folder, run_dir), checkpoint, dict(task_init))


def _checkpoint_path(spec: FinetuneFrom, src: Source) -> Path:
    if spec.checkpoint in ("best", "last"):
        path = spec.run_dir / "checkpoints" / f"{spec.checkpoint}.ckpt"
    else:
        path = resolve_path(src.path.parent, spec.checkpoint)
    if not spec.run_dir.is_dir():
        raise src.error(
            (*_WHERE, "run_dir"),
            f"{spec.run_dir} is not a run directory (train the source run first)",
        )
    if not path.is_file():
        raise src.error((*_WHERE, "checkpoint"), f"no checkpoint at {path}")
    return path.resolve()


def _source_tasks(spec: FinetuneFrom) -> list[str] | None:
    """Task names of the source run (from its saved config.yaml), None when unreadable."""
    config = spec.run_dir / "config.yaml"
    if not config.is_file():
        return None
    tasks = get_path(load_source(config, "source run config").doc, _TASKS)
    return list(tasks) if isinstance(tasks, dict) else None


def apply_finetune_from(run: dict, spec: FinetuneFrom, src: Source) -> dict:
    """The run config with ``model.init_args.init_from`` filled in, after checking that the
    checkpoint exists and ``task_init`` names tasks of both runs."""
    checkpoint = _checkpoint_path(spec, src)
    tasks = get_path(run, _TASKS)
    new_tasks = list(tasks) if isinstance(tasks, dict) else []
    old_tasks = _source_tasks(spec)
    for new, old in spec.task_init.items():
        where = (*_WHERE, "task_init", new)
        if new not in new_tasks:
            raise src.error(
                where, f"'{new}' is not a task of this run ({', '.join(new_tasks) or 'none'})"
            )
        if old_tasks is not None and old not in old_tasks:
            raise src.error(
                where,
                f"'{old}' is not a task of the source run {spec.run_dir} ({', '.join(old_tasks)})",
            )
    init = {"checkpoint": str(checkpoint), "task_init": dict(spec.task_init)}
    return set_path(run, INIT_FROM, init)
