"""Every use of a library's private internals, in one place.

The toolkit relies on a few behaviours that lightning, jsonargparse, peft, torchjd and
submitit do not expose publicly. Each is wrapped here in a small function (or a mixin that
maps a private hook to a public-named method), so an upgrade that changes one breaks this
module, and ``tests/test_compat.py`` (which exercises each against the installed versions),
not a run. ``constraints.txt`` pins the tested versions; ``pyproject.toml`` bounds the majors.

Importing this module imports no library: each function imports what it touches.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint


# ---- jsonargparse: its error prose -----------------------------------------------------------
# jsonargparse reports a failure as text only (an indented tree of these lines around the
# reason); ``runtime.config_errors`` reads the key path and the offending name out of it.
#: ``Parser key "model":`` - one level of the failing key path
JSONARGPARSE_KEY = re.compile(r'Parser key "([^"]+)":')
#: ``Problem with given class_path 'runtime.heads.X':`` - the class being built at that level
JSONARGPARSE_CLASS = re.compile(r"Problem with given class_path '([^']+)':")
#: ``Option 'hiden' is not accepted`` - an unknown init argument
JSONARGPARSE_OPTION = re.compile(r"Option '([^']+)' is not accepted")
#: ``Group 'trainer' does not accept option 'max_epoch'`` - an unknown key of a group
JSONARGPARSE_GROUP = re.compile(r"Group '([^']+)' does not accept option '([^']+)'")
#: ``the following arguments are required: a, b`` - missing init arguments
JSONARGPARSE_REQUIRED = re.compile(r"the following arguments are required: (.+)")
#: ``unrecognized arguments: --x`` - an unknown command-line option
JSONARGPARSE_UNRECOGNIZED = re.compile(r"unrecognized arguments: -*([^\s=]+)")
#: ``Got value: Namespace(class_path='...'`` - the class of a failing union member
JSONARGPARSE_GOT_CLASS = re.compile(r"Got value: Namespace\(class_path='([^']+)'")


# ---- typing: union order as jsonargparse sees it -------------------------------------------
def int_before_float(function: Any) -> None:
    """Make every int-or-float union in ``function``'s annotations list ``int`` first.

    ``typing`` caches ``Optional[X]`` by ``X``, and ``Union[float, int] == Union[int, float]``.
    So a library imported before Lightning that builds a float-first ``Optional`` union (httpx,
    which Flower imports, does) can hand its float-first union to
    ``Trainer``'s ``limit_train_batches: Optional[Union[int, float]]``, and jsonargparse, which
    tries union members in order, reads ``limit_train_batches: 4`` as 4.0 (a fraction, to
    Lightning). Rebuilt as ``int | float | None`` (never cached), the order is the declared one.
    """
    import functools
    import operator
    import types
    import typing

    notes = function.__annotations__
    for name, hint in list(notes.items()):
        if typing.get_origin(hint) not in (typing.Union, types.UnionType):
            continue
        members = typing.get_args(hint)
        if int in members and float in members and members.index(float) < members.index(int):
            ordered = (int, *(m for m in members if m is not int))
            notes[name] = functools.reduce(operator.or_, ordered)


# ---- lightning ---------------------------------------------------------------------------------
def should_update_logs(trainer: Trainer) -> bool:
    """Whether Lightning writes this training step to the logger (``log_every_n_steps``):
    its own decision, so rows logged by hand land on the steps it writes."""
    return bool(trainer._logger_connector.should_update_logs)


def batches_processed_this_epoch(trainer: Trainer) -> int:
    """Training batches the fit loop has finished in the current epoch (the data loaders
    prefetch ahead, so their own count is larger)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


class ExperimentWriterHooks:
    """Mixin for Lightning's CSV ``ExperimentWriter``: its private hooks under public names.

    ``on_existing_metrics_file()`` runs where Lightning would delete an existing
    ``metrics.csv``; ``rewrite_with_header(fieldnames)`` where it rewrites the file with new
    columns (in place, truncating it first).
    """

    def _check_log_dir_exists(self) -> None:
        self.on_existing_metrics_file()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self.rewrite_with_header(fieldnames)

    def on_existing_metrics_file(self) -> None:
        raise NotImplementedError

    def rewrite_with_header(self, fieldnames: list[str]) -> None:
        raise NotImplementedError


class ModelCheckpointHooks:
    """Mixin for Lightning's ``ModelCheckpoint``: ``after_save_last(trainer)`` runs each time
    it has saved ``last.ckpt`` (its private ``_save_last_checkpoint``)."""

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)  # type: ignore[misc]
        self.after_save_last(trainer)

    def after_save_last(self, trainer: Trainer) -> None:
        """Called after ``last.ckpt`` was written."""

    def save_last_now(self, trainer: Trainer) -> None:
        """Save ``last.ckpt`` for the current step, as ModelCheckpoint itself does."""
        self._save_last_checkpoint(trainer, monitor_candidates(self, trainer))  # type: ignore[arg-type]


def skips_saving(callback: ModelCheckpoint, trainer: Trainer) -> bool:
    """Whether ``callback`` saves nothing at this point (sanity check, fast dev run, ...)."""
    return bool(callback._should_skip_saving_checkpoint(trainer))


def saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: Trainer) -> bool:
    """Whether ``callback`` saves at the end of the training epoch (not after validation)."""
    return bool(callback._should_save_on_train_epoch_end(trainer))


def monitor_candidates(callback: ModelCheckpoint, trainer: Trainer) -> dict[str, Any]:
    """The metrics ``callback`` may monitor now (what it passes to its savers)."""
    return callback._monitor_candidates(trainer)


def checkpoint_schedule(callback: ModelCheckpoint) -> dict[str, Any]:
    """The saving schedule of ``callback`` that names its state in checkpoints."""
    return {
        "every_n_train_steps": callback._every_n_train_steps,
        "every_n_epochs": callback._every_n_epochs,
        "train_time_interval": callback._train_time_interval,
    }


def tensorboard_available() -> bool:
    """Whether Lightning finds the tensorboard package (its own check)."""
    from lightning.pytorch.loggers.tensorboard import _TENSORBOARD_AVAILABLE

    return bool(_TENSORBOARD_AVAILABLE)


# ---- peft -------------------------------------------------------------------------------------
def set_adapter_disabled(layer: Any, disabled: bool) -> None:
    """Switch a peft tuner layer's adapter off or on without touching ``requires_grad``
    (peft's public ``enable_adapters`` also freezes or unfreezes the adapter weights)."""
    layer._disable_adapters = disabled


# ---- torchjd ----------------------------------------------------------------------------------
def famo_logits(famo: Any) -> Any:
    """torchjd FAMO's task logits ``w`` (softmax gives its task weights)."""
    return famo._w


def famo_previous_losses(famo: Any) -> Any:
    """The losses FAMO compares the next step's with (None before the first step)."""
    return famo._prev_losses


def famo_adam_state(famo: Any) -> dict[str, Any] | None:
    """The state of FAMO's own Adam over its logits (None until torchjd built it)."""
    return None if famo._optimizer is None else famo._optimizer.state_dict()


def set_famo_previous_losses(famo: Any, losses: Any) -> None:
    """Set the losses FAMO compares the next step's with."""
    famo._prev_losses = losses


def load_famo_state(famo: Any, w: Any, previous: Any, adam: dict[str, Any] | None) -> None:
    """Restore FAMO's logits, previous losses and Adam state (its optimizer is rebuilt)."""
    import torch

    with torch.no_grad():
        famo._w.copy_(w)
    famo._prev_losses = previous
    famo._optimizer = None
    if adam is not None:
        famo._optimizer = torch.optim.Adam([famo._w], lr=famo.lr, weight_decay=famo.weight_decay)
        famo._optimizer.load_state_dict(adam)


def apply_to_tensors(module: Any, fn: Any) -> None:
    """Apply ``fn`` to a module's parameters and buffers, as ``.to()`` / ``.cuda()`` do (for a
    module kept out of its owner's module tree, which ``_apply`` would not reach)."""
    module._apply(fn)


def foreach_lerp_(targets: list[Any], ends: list[Any], weight: float) -> None:
    """``target += weight * (end - target)`` for every pair, in one fused kernel per device
    (torch's ``_foreach`` family; ``torch.lerp`` per tensor is one launch each)."""
    import torch

    torch._foreach_lerp_(targets, ends, weight)


def module_buffers(module: Any) -> dict[str, Any]:
    """A module's own buffers, None ones included (``named_buffers`` skips those)."""
    return dict(module._buffers)


def rebuild_solver_problem(weighting: Any) -> None:
    """torchjd's NashMTL keeps a cvxpy problem (``_init_optim_problem`` builds it) that is not
    saved; rebuild it after its state was restored mid-run (else it is built lazily on the
    first step). Other modules are left alone."""
    reinit = getattr(weighting, "_init_optim_problem", None)
    if callable(reinit) and getattr(weighting, "step", 0) and not hasattr(weighting, "prob"):
        reinit()


# ---- submitit ---------------------------------------------------------------------------------
def sbatch_script(executor: Any, generic: dict[str, Any], count: int) -> str:
    """The sbatch script submitit would submit for an array of ``count`` jobs, rendered by
    submitit itself from generic (``timeout_min``, ``gpus_per_node``, ...) parameters."""
    from submitit.slurm.slurm import _make_sbatch_string

    executor.update_parameters(**executor._convert_parameters(generic))
    return _make_sbatch_string(
        command=executor._submitit_command_str,
        folder=executor.folder,
        map_count=count,
        **executor.parameters,
    )
