"""``mtl-run [fit|validate|test|predict] RUN.yaml [overrides]``: run a compiled run config.

jsonargparse (through ``LightningCLI``) parses the config and the dotted overrides and builds
every object from its ``class_path``/``init_args``; this module adds the run directory, the
``--check`` mode, exit-code-2 config errors and the end-of-run report.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from jsonargparse import ActionYesNo, ArgumentError
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from compiler.files import check_output
from runtime import compat
from runtime.checkpoints import AtomicCheckpointIO, RunCheckpoint
from runtime.command_line import launched_as_rank_zero, split_command_line
from runtime.config_errors import ConfigError, explain_argument_error, load_yaml
from runtime.csv_log import RunCSVLogger, tensorboard_logger
from runtime.exits import RUN, guarded
from runtime.hardware import (
    DEVICE_HELP,
    CompileMode,
    DeviceMemoryError,
    MatmulPrecision,
    apply_run_settings,
    check_accelerator,
    out_of_memory_message,
    resolve_device,
    trainer_device,
)
from runtime.history import ValidationHistory
from runtime.protocols import HasBatchSizes, HasTasks
from runtime.quiet import quiet_lightning, summary_kwargs
from runtime.run_lock import release_locks
from runtime.rundir import RunDir, prepare_fit_dir
from runtime.stop import GracefulStop

KeepCount = restricted_number_type("KeepCount", int, (">=", -1))
"""How many files to keep: a count, or -1 for all (checked when the config is parsed)."""


@dataclass
class RunOptions:
    """Checkpointing and model selection (the ``run:`` section of a run config).

    Args:
        monitor: metric that selects the best checkpoint and drives early stopping.
        mode: whether ``monitor`` is better when higher (``max``) or lower.
        per_task_monitors: also keep ``best-<task>.ckpt`` per task, selected on that task's
            primary metric; ``summary.json`` then reports each task at its own best checkpoint.
        checkpoint_every_n_steps: also save ``step-<N>.ckpt`` every N optimizer steps
            (with data-sampler position and RNG state, for an exact mid-epoch ``--resume``).
        keep_step_checkpoints: how many of the newest step checkpoints to keep (-1: all).
        early_stopping_patience: stop after this many validations without improvement.
        num_threads: torch intra-op CPU threads (``torch.set_num_threads``); 1 is much faster
            for small models on a busy or 2-core machine. None keeps torch's default.
        float32_matmul_precision: ``torch.set_float32_matmul_precision`` ("high" lets
            float32 matrix products use TF32 on Ampere and newer GPUs). None keeps torch's.
        compile: ``torch.compile`` the model for training and evaluation (true, or a mode
            such as "reduce-overhead" or "max-autotune"); checkpoints load without it.
        tensorboard: also log to TensorBoard in ``RUN_DIR/tensorboard/`` (needs the
            ``[tensorboard]`` extra; view with ``tensorboard --logdir RUN_DIR/tensorboard``).
    """

    monitor: str = "val/score"
    mode: Literal["max", "min"] = "max"
    per_task_monitors: bool = False
    checkpoint_every_n_steps: PositiveInt | None = None
    keep_step_checkpoints: KeepCount = 2
    early_stopping_patience: NonNegativeInt | None = None
    num_threads: PositiveInt | None = None
    float32_matmul_precision: MatmulPrecision | None = None
    compile: bool | CompileMode = False
    tensorboard: bool = False


class RunCLI(LightningCLI):
    """LightningCLI without subcommand dispatch: ``run_command`` runs the subcommand itself."""

    def __init__(
        self,
        subcommand: str,
        config_path: Path | None,
        args: list[str],
        source: dict[str, Any] | None = None,
    ) -> None:
        self.subcommand_name = subcommand
        self.config_path = config_path
        self.source = source  # a run config given as a dict (the Python API), not a file
        self.run_dir: Path | None = None
        self.resume_from: Path | None = None
        self.resume_step: int | None = None
        compat.int_before_float(Trainer.__init__)
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            auto_configure_optimizers=False,
            run=False,
            args=args,
            parser_kwargs={
                "exit_on_error": False,
                "allow_abbrev": False,  # --trainer.max_epoch must not mean max_epochs
                "prog": f"mtl-run {subcommand}",
                "usage": f"mtl-run {subcommand} RUN.yaml [options] [--key.path=VALUE ...]",
                "description": "Run a compiled multitask run config: "
                "mtl-run [fit|validate|test|predict] RUN.yaml [--key.path=value ...]",
            },
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--run_dir",
            "--run-dir",
            type=str | None,
            default=None,
            help="Run directory (default: runs/<config stem>/).",
        )
        for flag, text in (
            ("--resume", "Continue the run in --run_dir from its newest checkpoint."),
            ("--force", "Delete an existing run directory and start over."),
            (
                "--check",
                "Build everything fit builds, set up the data and run one batch per "
                "dataset through the model and loss; train nothing, write nothing.",
            ),
        ):
            parser.add_argument(
                flag, action=ActionYesNo(yes_prefix="", no_prefix="no_"), default=False, help=text
            )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="validate/test/predict: best (default), last, step-<N>, best-<task> or a "
            "checkpoint path (see docs/file-formats.md).",
        )
        parser.add_argument(
            "--device",
            type=str | None,
            default=None,
            help=f"Run on one device: {DEVICE_HELP.split(' (')[0]} or auto (sets "
            "trainer.accelerator and trainer.devices); default: the config's trainer settings.",
        )
        parser.add_class_arguments(RunOptions, "run")
        # Lightning's class docstrings make poor group titles (the data one is cut mid-sentence).
        for name, title in (
            ("trainer", "Trainer options (trainer: section; Lightning's Trainer arguments)"),
            ("model", "The model (model: section; class_path and init_args)"),
            ("data", "The data (data: section; class_path and init_args)"),
        ):
            if name in parser.groups:
                parser.groups[name].title = title

    def parse_arguments(self, parser: Any, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise ConfigError(self._explain(err, parser)) from None

    def _explain(self, err: ArgumentError, parser: Any) -> str:
        config = load_yaml(self.config_path) if self.config_path else self.source
        defaults = parser.get_defaults().as_dict()
        groups = {k: list(v) for k, v in defaults.items() if isinstance(v, dict)}
        groups[""] = list(defaults)
        where = f"{self.config_path} " if self.config_path else ""
        return f"{where}{explain_argument_error(err, config, groups)}"

    def before_instantiate_classes(self) -> None:
        from runtime.balancing import check_run_config
        from runtime.preflight import check_trainer_values

        where = f"{self.config_path}: " if self.config_path else ""
        check_trainer_values(self.config.trainer.as_dict(), where)
        problem = check_run_config(self.config)
        if problem:
            raise ConfigError(f"{where}{problem}")
        if self.config.run_dir:
            self.run_dir = Path(self.config.run_dir)
        elif self.config_path:
            self.run_dir = RunDir.default_for(self.config_path).path
        else:
            self.run_dir = Path("runs/run")
        RUN.run_dir = self.run_dir
        self._choose_device()
        if self.config.check:
            pass  # --check writes nothing and looks at no run directory
        elif self.subcommand_name == "fit":
            found = prepare_fit_dir(
                self.run_dir, self.config.resume, self.config.force, launched_as_rank_zero()
            )
            if found is not None:
                self.resume_from, self.resume_step = found
        else:
            check_output(self.run_dir, "dir", flag="--run-dir")
        apply_run_settings(vars(self.config.run))

    def _choose_device(self) -> None:
        """``--device`` as trainer settings; a GPU the machine lacks is a config error."""
        trainer = self.config.trainer
        if self.config.device is not None:
            for key, value in trainer_device(resolve_device(self.config.device)).items():
                trainer[key] = value
        where = f"{self.config_path}: " if self.config_path else ""
        check_accelerator(trainer.accelerator, where)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        assert self.run_dir is not None
        kwargs["default_root_dir"] = str(self.run_dir)
        events = RunDir(self.run_dir).tensorboard
        kwargs["logger"] = (
            [
                RunCSVLogger(self.run_dir, resume_step=self.resume_step),
                *([tensorboard_logger(events)] if self.config.run.tensorboard else []),
            ]
            if self.subcommand_name == "fit" and not self.config.check
            else False
        )
        configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        if not isinstance(configured, list):
            configured = [configured]
        summary_args, summary_callbacks = summary_kwargs(
            self._get(self.config_init, "trainer", default={})
        )
        kwargs.update(summary_args)
        kwargs["callbacks"] = [*configured, *self._run_callbacks(), *summary_callbacks]
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # checkpoints are written atomically
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)

    def _run_callbacks(self) -> list[Callback]:
        opts = RunOptions(**vars(self.config.run))
        run = RunDir(self.run_dir)
        ckpt_dir = str(run.checkpoints)
        callbacks: list[Callback] = [
            ValidationHistory(),
            RunCheckpoint(
                dirpath=ckpt_dir,
                filename=RunDir.BEST,
                monitor=opts.monitor,
                mode=opts.mode,
                save_last=True,
                auto_insert_metric_name=False,
            ),
        ]
        if opts.per_task_monitors:
            callbacks += task_checkpoints(self.model, ckpt_dir)
        if opts.checkpoint_every_n_steps:
            callbacks.append(
                RunCheckpoint(
                    dirpath=ckpt_dir,
                    filename=RunDir.STEP_TEMPLATE,
                    monitor="step",
                    mode="max",
                    every_n_train_steps=opts.checkpoint_every_n_steps,
                    save_top_k=opts.keep_step_checkpoints,
                    auto_insert_metric_name=False,
                )
            )
        if self.subcommand_name == "fit":
            callbacks.append(GracefulStop(run.checkpoint_file(RunDir.LAST)))
        if opts.early_stopping_patience is not None:
            # a plain int: the callback's state (patience) goes into checkpoints, which load
            # with weights_only=True, where jsonargparse's NonNegativeInt is not allowed
            patience = int(opts.early_stopping_patience)
            callbacks.append(EarlyStopping(monitor=opts.monitor, mode=opts.mode, patience=patience))
        return callbacks

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, KeyError, MisconfigurationException) as err:
            where = f"{self.config_path}: " if self.config_path else ""
            raise ConfigError(
                f"{where}could not build the objects of the config: {constructor_error(err)}"
            ) from err


def constructor_error(err: Exception) -> str:
    """A constructor's own message, without jsonargparse's union reports around it (which
    end in a dump of the whole parsed config); nested reports (an optional component of an
    optional component) are searched to their innermost messages."""
    text = str(err)
    if "Given value" not in text:
        return text
    causes = [
        line.strip()[2:]
        for line in text.splitlines()
        if line.lstrip().startswith("- ")
        and "NoneType" not in line
        and "Does not validate against any of the Union subtypes" not in line
    ]
    return "; ".join(causes) or text


def task_checkpoints(model: LightningModule, ckpt_dir: str) -> list[Callback]:
    """One ``best-<task>.ckpt`` per task, on its primary metric."""
    tasks = model.tasks if isinstance(model, HasTasks) else {}
    out: list[Callback] = []
    for name, task in tasks.items():
        metric = f"val/{name}/{task.primary_metric}"
        mode = "max" if task.higher_is_better(task.primary_metric) else "min"
        out.append(
            RunCheckpoint(
                dirpath=ckpt_dir,
                filename=RunDir.best_of(name),
                monitor=metric,
                mode=mode,
                auto_insert_metric_name=False,
            )
        )
    return out


def run_command(argv: list[str], source: dict[str, Any] | None = None) -> RunCLI:
    """Run one ``mtl-run`` command line (``argv`` as typed after ``mtl-run``) and return the
    finished CLI; bad input raises ``ConfigError``. The one path of ``main`` and of
    :mod:`runtime.api`, whose run configs may be dicts: ``source`` then stands for RUN.yaml.
    The run directory's lock is held until it returns.
    """
    quiet_lightning()
    subcommand, config_path, args = split_command_line(argv)
    RUN.subcommand = subcommand
    if source is not None:
        try:
            text = yaml.safe_dump(source, sort_keys=False)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"the run config holds a value that is not plain data "
                f"(numbers, strings, lists, dicts): {err}"
            ) from None
        args = ["--config", text, *args]
    try:
        try:
            cli = RunCLI(subcommand, config_path, args, source=source)
        except ArgumentError as err:  # raised outside parse_arguments (e.g. a bad --help use)
            raise ConfigError(str(err)) from None
        if cli.config.check:  # everything fit builds and checks, then stop (runtime.preflight)
            from runtime.preflight import check_before_run

            check_before_run(cli)
            return cli
        from runtime.runner import run_subcommand

        try:
            run_subcommand(cli, argv)  # ConfigErrors found once the objects exist
        except torch.OutOfMemoryError:
            data = cli.datamodule
            sizes = data.batch_sizes if isinstance(data, HasBatchSizes) else None
            device = str(getattr(cli.model, "device", "the GPU"))
            raise DeviceMemoryError(out_of_memory_message(device, sizes)) from None
    finally:
        release_locks()
    return cli


def main(argv: list[str] | None = None) -> int:
    """``mtl-run``; how it ends maps to the exit-code table (``compiler.exitcodes``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return guarded(lambda: _main(argv), argv)


def _main(argv: list[str]) -> int:
    cli = run_command(argv)  # ConfigErrors (bad input, failed writes) exit 2 in guarded()
    if cli.config.check:
        print(f"{split_command_line(argv)[1]}: OK")
        return 0
    if cli.trainer.is_global_zero:  # the last line of stdout, once per launch
        print(cli.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
