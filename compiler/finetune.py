"""The maker key ``finetune_from``: start the compiled run from a trained run ("isolate
fine-tune").

::

    finetune_from:
      run_dir: ../runs/task_conditioned   # relative to the maker file
      checkpoint: best                    # best | last | a checkpoint path
      task_init: {new_task: existing_task}

compiles to the module's ``model.init_args.init_from: {run_dir: ABSOLUTE_PATH, checkpoint:
best|last|ABSOLUTE_PATH, task_init}``. The compiler names no file of the run directory: the
runtime (``runtime.init_from``, through ``runtime.rundir.RunDir``) resolves the checkpoint when
the fit starts, so a fine-tune config can be compiled before its source run has trained. Then
shared weights and the decoders of tasks both runs have come from the checkpoint, new tasks'
decoders start fresh and a new task's embedding row starts from the named existing task's
(task names are checked against the checkpoint then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .keypaths import INIT_FROM
from .keypaths import TASKS as _TASKS
from .tree import get_path, set_path
from .yamlio import Source, resolve_path

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
            "description": "best, last, step-<N>, or a checkpoint path (default best).",
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
_WHERE = ("finetune_from",)


class FinetuneFrom:
    """A checked ``finetune_from``: the run directory resolved against the maker's folder."""

    def __init__(
        self, run_dir: Path, checkpoint: str = "best", task_init: dict[str, str] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.task_init = task_init if task_init is not None else {}


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


def _checkpoint_request(spec: FinetuneFrom, src: Source) -> str:
    """A checkpoint name of the run (a bare word: ``best``, ``last``, ``step-500``) as given;
    a path (it has a ``/`` or a ``.``) made absolute against the maker file's folder."""
    if "/" in spec.checkpoint or "." in spec.checkpoint:
        return str(resolve_path(src.path.parent, spec.checkpoint).absolute())
    return spec.checkpoint


def apply_finetune_from(run: dict, spec: FinetuneFrom, src: Source) -> dict:
    """The run config with ``model.init_args.init_from`` filled in, after checking that
    ``task_init`` names tasks of this run (the source run's are checked when the fit starts)."""
    tasks = get_path(run, _TASKS)
    new_tasks = list(tasks) if isinstance(tasks, dict) else []
    for new in spec.task_init:
        if new not in new_tasks:
            raise src.error(
                (*_WHERE, "task_init", new),
                f"'{new}' is not a task of this run ({', '.join(new_tasks) or 'none'})",
            )
    init = {
        "run_dir": str(spec.run_dir.absolute()),
        "checkpoint": _checkpoint_request(spec, src),
        "task_init": dict(spec.task_init),
    }
    return set_path(run, INIT_FROM, init)
