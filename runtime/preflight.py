"""What ``mtl-run`` checks before a run starts; ``mtl-run --check`` runs exactly this.

Everything ``fit`` builds is built (model, data modules, trainer, callbacks), the data
modules are set up (files read, labels checked against the tasks), one batch per dataset
goes through the model and the loss, the monitored metric is checked against what the model
logs, and a checkpoint to resume or evaluate is checked against the model's tensors. Each
problem is a :class:`ConfigError` naming the key path (or file and row), so ``--check`` and
``fit`` refuse a bad config with the same one paragraph and exit code 2, before anything is
written. Nothing here draws from the global random generators.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from compiler.errors import ConfigError as InputError
from compiler.errors import did_you_mean
from compiler.keypaths import DATA_ARGS, MODEL_ARGS, TASKS
from runtime.config_errors import ConfigError, first_line
from runtime.data.validate import expect_tasks
from runtime.module import MultiTaskModule
from runtime.protocols import HasTasks
from runtime.rng import rng_states, set_rng_states
from runtime.rundir import check_fits, read_checkpoint

if TYPE_CHECKING:
    from runtime.cli import RunCLI

Batch = dict[str, Any]
SPLIT_OF_STAGE = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}
_MODEL_KEY = MODEL_ARGS
_PREVIEW_LIMIT = 64
"""Batches read from a data module without ``preview_batches`` to find one per dataset."""


@runtime_checkable
class PreviewsBatches(Protocol):
    """A data module that can show one batch per dataset without sampling (the built-in
    multi-dataset module); others are read through their loaders."""

    def split_sizes(self, split: str) -> dict[str, int]: ...

    def preview_batches(self, split: str) -> dict[str, Batch]: ...


# ---------------------------------------------------------------- trainer values
def _at_least(low: float) -> Any:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= low


def _int_at_least(low: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _fraction_or_count(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return (isinstance(v, int) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def _interval(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return (isinstance(v, int) and v >= 1) or (isinstance(v, float) and 0.0 < v <= 1.0)


_TRAINER_RULES: dict[str, tuple[Any, str]] = {
    "max_epochs": (_int_at_least(-1), "a count of epochs >= 0, or -1 for no limit"),
    "min_epochs": (_int_at_least(0), "a count of epochs >= 0"),
    "max_steps": (_int_at_least(-1), "a count of steps >= 0, or -1 for no limit"),
    "min_steps": (_int_at_least(0), "a count of steps >= 0"),
    "check_val_every_n_epoch": (_int_at_least(1), "a count of epochs >= 1"),
    "log_every_n_steps": (_int_at_least(1), "a count of steps >= 1"),
    "accumulate_grad_batches": (_int_at_least(1), "a count of batches >= 1"),
    "num_sanity_val_steps": (_int_at_least(-1), "a count of batches >= 0, or -1 for all"),
    "gradient_clip_val": (_at_least(0), "a value >= 0"),
    "val_check_interval": (_interval, "a count of batches >= 1 or a fraction in (0, 1]"),
    **{
        f"limit_{s}_batches": (_fraction_or_count, "a count >= 0 or a fraction in [0, 1]")
        for s in ("train", "val", "test", "predict")
    },
}


def check_trainer_values(trainer: Mapping[str, Any], where: str = "") -> None:
    """Refuse trainer values Lightning would only reject late (``max_epochs: -5``)."""
    for key, (ok, wanted) in _TRAINER_RULES.items():
        value = trainer.get(key)
        if value is not None and not ok(value):
            raise ConfigError(
                f"{where}at trainer.{key}: {value!r} is not valid: expected {wanted}."
            )


# ---------------------------------------------------------------- the whole check
@contextmanager
def _rng_untouched() -> Iterator[None]:
    """Restore every global generator afterwards, so a checked run trains like an unchecked
    one (a loader may seed itself from torch's generator)."""
    states = rng_states()
    try:
        yield
    finally:
        set_rng_states(states)


def check_before_run(cli: RunCLI, checkpoint: str | None = None) -> None:
    """Everything a run of ``cli``'s subcommand needs, short of running it (see module doc).

    ``checkpoint`` is the file validate/test/predict will load (None: fresh weights)."""
    stage = "fit" if cli.config.check else cli.subcommand_name
    where = f"{cli.config_path}: " if cli.config_path else ""
    module, datamodule = cli.model, cli.datamodule
    with _rng_untouched():
        tasks = dict(module.tasks) if isinstance(module, HasTasks) else {}
        expect_tasks(datamodule, tasks)
        _setup_data(datamodule, stage, where)
        split = SPLIT_OF_STAGE[stage]
        batches = _first_batches(datamodule, split, where, cli.trainer)
        if stage == "fit":
            _check_validation_split(datamodule, cli.config.run.monitor, where)
        if isinstance(module, MultiTaskModule):
            logged = _forward(module, batches, where)
            if stage == "fit":
                _check_monitor(cli.config.run.monitor, logged, tasks, where)
    if stage == "fit" and cli.resume_from is not None:
        _check_checkpoint(Path(cli.resume_from), module, resume=True)
    elif stage != "fit" and checkpoint is not None:
        _check_checkpoint(Path(checkpoint), module, resume=False)


# ---------------------------------------------------------------- data
def _data_error(exc: InputError, where: str) -> ConfigError:
    """A data module's error, its key path rooted at the run config's ``data`` section."""
    key = (*DATA_ARGS, *exc.key) if exc.key else ("data",)
    return ConfigError(
        exc.message, file=exc.file or where.rstrip(": ") or None, line=exc.line, key=key
    )


def _setup_data(datamodule: Any, stage: str, where: str) -> None:
    from runtime.command_line import launched_as_rank_zero

    try:
        if launched_as_rank_zero():
            datamodule.prepare_data()
        datamodule.setup(stage)
    except InputError as exc:
        raise _data_error(exc, where) from None
    except (OSError, ValueError) as exc:  # a user data module's own reading errors
        raise ConfigError(
            f"{where}at data: setting up the data failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None


def _first_batches(datamodule: Any, split: str, where: str, trainer: Any) -> dict[str, Batch]:
    """One batch per dataset of ``split``, read the way the run reads them (a data module of
    the user's own sees the run's trainer, as it will in the run)."""
    attached = getattr(datamodule, "trainer", None) is None
    if attached:
        datamodule.trainer = trainer
    try:
        if isinstance(datamodule, PreviewsBatches):
            return datamodule.preview_batches(split)
        loader = getattr(datamodule, f"{split}_dataloader")()
        found: dict[str, Batch] = {}
        for i, batch in enumerate(loader):
            name = batch.get("dataset", "data") if isinstance(batch, dict) else "data"
            found.setdefault(str(name), batch)
            if i + 1 >= _PREVIEW_LIMIT:
                break
        return found
    except InputError as exc:
        raise _data_error(exc, where) from None
    except Exception as exc:  # any failure to read a batch is a data problem
        raise ConfigError(
            f"{where}at data: reading a first {split} batch failed: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        if attached:
            datamodule.trainer = None


def _check_validation_split(datamodule: Any, monitor: str, where: str) -> None:
    """A fit selects its best checkpoint on validation metrics: refuse a run where no
    dataset has validation samples, and say which datasets have none."""
    if not isinstance(datamodule, PreviewsBatches):
        return
    val = datamodule.split_sizes("val")
    empty = [name for name, size in val.items() if size == 0]
    if not empty:
        return
    train, test = datamodule.split_sizes("train"), datamodule.split_sizes("test")
    sizes = ", ".join(
        f"'{n}' {train[n]} train / {val[n]} val / {test[n]} test samples" for n in empty
    )
    if len(empty) == len(val) and monitor.startswith("val/"):
        raise ConfigError(
            f"{where}at data: no dataset has validation samples ({sizes}), so run.monitor "
            f"'{monitor}' can never be computed and no best checkpoint chosen: give the "
            "datasets more samples, a larger val_fraction or a val_path."
        )
    print(
        f"mtl-run: warning: no validation samples in {sizes}: their tasks get no "
        "validation metrics (null in summary.json)",
        file=sys.stderr,
    )


# ---------------------------------------------------------------- forward pass
def config_entry(module_name: str) -> tuple[str, ...] | None:
    """The run-config key path of a configured submodule of ``MultiTaskModule.model``
    (``encoder.0`` -> ``model.init_args.model.init_args.encoder[0]``); None for a module
    inside one (``encoder.0.net``) or a container (``encoder``)."""
    parts = module_name.split(".")
    if parts[0] == "encoder":
        return (*_MODEL_KEY, f"encoder[{parts[1]}]") if len(parts) == 2 else None
    if parts[0] == "decoders":
        return (*_MODEL_KEY, "decoders", f"{parts[1]}[{parts[2]}]") if len(parts) == 3 else None
    return (*_MODEL_KEY, parts[0]) if len(parts) == 1 else None


class _Tracer:
    """Forward hooks keeping the stack of modules being run, and what each received."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, nn.Module, list[Any]]] = []
        self.handles = []
        for name, sub in model.named_modules():
            if name:
                self.handles.append(sub.register_forward_pre_hook(self._enter(name)))
                self.handles.append(sub.register_forward_hook(self._leave))

    def _enter(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            shapes = [list(a.shape) for a in args if isinstance(a, Tensor)]
            self.stack.append((name, module, shapes))

        return hook

    def _leave(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _culprit(stack: list[tuple[str, nn.Module, list[Any]]]) -> tuple[tuple[str, ...], str]:
    """Where a forward failed: the config entry's key path, and its class and the innermost
    layer with what that layer received."""
    entries = [(config_entry(name), module) for name, module, _ in stack]
    key, top = next(((k, m) for k, m in reversed(entries) if k is not None), (_MODEL_KEY, None))
    inner_name, inner, shapes = stack[-1]
    text = f" in {type(top).__module__}.{type(top).__qualname__}" if top is not None else ""
    detail = [f"layer {inner_name} ({type(inner).__name__}"]
    for attr in ("in_features", "in_channels", "num_outputs", "out_features"):
        if isinstance(getattr(inner, attr, None), int):
            detail.append(f", {attr}={getattr(inner, attr)}")
    detail.append(f") got input of shape {shapes[0]}" if shapes else ")")
    return key, f"{text}; " + "".join(detail)


def _forward(module: MultiTaskModule, batches: Mapping[str, Batch], where: str) -> set[str]:
    """Run one batch per dataset through the model and each task's loss (eval mode, no
    gradient, so no state changes); returns the metric names validation will log."""
    logged = {"train/loss", "train/loss_step", "train/loss_epoch", "val/loss", "val/score"}
    training = module.training
    module.eval()
    tracer = _Tracer(module.model)
    try:
        with torch.no_grad():
            for dataset, batch in batches.items():
                logged |= _forward_one(module, dataset, batch, tracer, where)
    finally:
        tracer.remove()
        module.train(training)
    return logged


def _forward_one(
    module: MultiTaskModule, dataset: str, batch: Batch, tracer: _Tracer, where: str
) -> set[str]:
    targets: Mapping[str, Tensor] = batch.get("targets") or {}
    unknown = [t for t in targets if t not in module.tasks]
    if unknown:
        raise ConfigError(
            f"{where}at data: dataset '{dataset}' carries task '{unknown[0]}' that "
            f"model.init_args.tasks does not define{did_you_mean(unknown[0], list(module.tasks))}"
            f" (tasks: {', '.join(module.tasks)})."
        )
    tasks = list(targets) or module.model.task_names
    inputs = batch["inputs"]
    try:
        outputs = module.model(inputs, tasks)
    except Exception as exc:  # a shape or type mismatch in the config
        key, culprit = _culprit(tracer.stack) if tracer.stack else (_MODEL_KEY, "")
        tracer.stack.clear()
        shape = list(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ConfigError(
            f"a batch of dataset '{dataset}' (inputs {shape}) does not go through the "
            f"model{culprit}: {first_line(exc)} (check in_features / input sizes)",
            file=where.rstrip(": ") or None,
            key=key,
        ) from None
    names: set[str] = set()
    for task, target in targets.items():
        definition = module.tasks[task]
        out = outputs[task]
        try:
            definition.loss(out, target)
            metric = definition.make_metrics()
            metric.update(out, target)
            names |= {f"val/{task}/{m}" for m in metric.compute()}
        except Exception as exc:  # outputs and targets that do not fit
            raise ConfigError(
                f"task '{task}' cannot score a batch of dataset '{dataset}': outputs "
                f"{list(out.shape)} against targets {list(target.shape)} "
                f"({target.dtype}): {first_line(exc)}",
                file=where.rstrip(": ") or None,
                key=(*TASKS, task),
            ) from None
        names |= {f"train/{task}/loss", f"val/{task}/loss"}
    return names


# ---------------------------------------------------------------- monitor, checkpoints
def _check_monitor(monitor: str, logged: set[str], tasks: Mapping[str, Any], where: str) -> None:
    """``run.monitor`` must be a metric the model logs in validation (or training)."""
    if monitor in logged or monitor.startswith("train/"):
        return
    parts = monitor.split("/")
    if (
        len(parts) == 3
        and parts[1] in tasks
        and not any(n.startswith(f"val/{parts[1]}/") and not n.endswith("/loss") for n in logged)
    ):
        return  # that task's metric names are unknown here (no labels in the first batch)
    shown = sorted(n for n in logged if n.startswith("val/"))
    raise ConfigError(
        f"{where}at run.monitor: '{monitor}' is never logged, so no best checkpoint could be "
        f"chosen{did_you_mean(monitor, sorted(logged))}; validation logs: {', '.join(shown)}."
    )


_RESUMABLE = ("optimizer_states", "loops", "epoch", "global_step")


def _check_checkpoint(path: Path, module: Any, resume: bool) -> None:
    """A checkpoint that does not load, is not a Lightning checkpoint or does not fit the
    model is refused here, naming the file and the first mismatched tensors."""
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    checkpoint = read_checkpoint(path)
    check_fits(path, checkpoint, module, "the model of this run config")
    if resume:
        absent = [k for k in _RESUMABLE if k not in checkpoint]
        if absent:
            raise ConfigError(
                f"{path} cannot be resumed: it holds weights only (no {', '.join(absent)}); "
                "start a new run from it with init_from instead"
            )
