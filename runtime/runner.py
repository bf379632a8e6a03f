"""Executes a parsed ``mtl-run`` subcommand and writes the run directory's reports."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from compiler import exitcodes
from compiler.files import atomic_write, check_output, write_json
from runtime.artifacts import (
    absent_metrics,
    per_task_report,
    task_metrics,
    write_confusion_matrices,
    write_predictions,
    write_summary,
)
from runtime.balancing import describe as describe_balancer
from runtime.hardware import compile_model
from runtime.history import ValidationHistory
from runtime.plots import plot_task_weights
from runtime.protocols import EmbeddingSource, HasTasks, PreparesFit, RecordsConfusion
from runtime.provenance import header_comments, run_info
from runtime.rundir import RunDir, create_run_dir, resolve_checkpoint
from runtime.step_stats import NonFiniteLossError

if TYPE_CHECKING:
    from runtime.cli import RunCLI


def stage_outputs(run: RunDir, stage: str) -> list[tuple[Path, Literal["file", "dir"]]]:
    """What a subcommand writes into the run directory (its ``*_info.json`` included)."""
    outputs: dict[str, list[tuple[Path, Literal["file", "dir"]]]] = {
        "fit": [
            (run.config, "file"),
            (run.summary, "file"),
            (run.metrics, "file"),
            (run.checkpoints, "dir"),
        ],
        "validate": [(run.stage_metrics("validate"), "file")],
        "test": [(run.stage_metrics("test"), "file")],
        "predict": [(run.predictions, "dir")],
    }
    return [*outputs[stage], (run.info(stage), "file")]


def _callback(trainer: Any, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


class WriteOnTrainStart(Callback):
    """Runs ``write`` on rank 0 once training starts (after the checkpoint being resumed was
    restored), so a fit that fails before, or a resume that does not fit, leaves the run
    directory's ``config.yaml`` and ``run_info.json`` as they were."""

    def __init__(self, write: Callable[[], Any]) -> None:
        self.write = write

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()


def save_config(cli: RunCLI, path: Path) -> None:
    """The config as executed: every default filled in, CLI-only switches left out."""
    from runtime.command_line import CLI_ONLY

    config = cli.config.clone()
    for key in CLI_ONLY:
        config.pop(key, None)
    config.pop("config", None)
    header = header_comments(cli.config_path)["header"] if cli.config_path else []
    body = cli.parser.dump(config, skip_none=False, skip_check=True)
    atomic_write(path, "".join(f"{line}\n" for line in header) + body)


def task_embedding_sources(model: Any) -> list[dict[str, Any]]:
    """Metadata of every precomputed task-embedding file the model read (for run_info.json)."""
    return [
        m.source_metadata
        for m in model.modules()
        if isinstance(m, EmbeddingSource) and m.source_metadata is not None
    ]


def run_subcommand(cli: RunCLI, argv: list[str]) -> None:
    from runtime.preflight import check_before_run

    run_dir = cli.run_dir
    assert run_dir is not None
    run = RunDir(run_dir)
    stage = cli.subcommand_name
    for path, kind in stage_outputs(run, stage):
        check_output(path, kind)  # before any work: no folder where a file goes
    ckpt = None if stage == "fit" else checkpoint_for_evaluation(cli)
    check_before_run(cli, None if ckpt is None else str(ckpt))
    if stage == "fit" and isinstance(cli.model, PreparesFit):  # init_from: before any write
        cli.model.prepare_fit(resuming=cli.resume_from is not None)
    from runtime.command_line import launched_as_rank_zero

    create_run_dir(run_dir, lock=stage == "fit" and launched_as_rank_zero())
    config_path = cli.config_path or run.config
    embeddings = task_embedding_sources(cli.model)
    for source in embeddings:
        print(
            f"task embeddings: {source['path']} ({source['model']}, "
            f"dim {source['dimension']}, options {source['options']})",
            file=sys.stderr,
        )

    def record() -> None:
        if stage == "fit":
            save_config(cli, run.config)
        info = run_info(argv, stage, config_path, cli.config.seed_everything)
        info["balancer"] = describe_balancer(cli.config)
        if embeddings:
            info["task_embeddings"] = embeddings
        write_json(run.info(stage), info)

    if stage == "fit":  # written once training starts: a fit that fails before changes nothing
        cli.trainer.callbacks.append(WriteOnTrainStart(record))
    else:
        record()
    compile_model(cli.model, cli.config.run.compile)
    if stage == "fit":
        _fit(cli)
    else:
        (_predict if stage == "predict" else _evaluate)(cli, str(ckpt))


def _tasks(cli: RunCLI) -> dict[str, Any]:
    return dict(cli.model.tasks) if isinstance(cli.model, HasTasks) else {}


def _fit(cli: RunCLI) -> None:
    trainer, run_dir = cli.trainer, cli.run_dir
    ckpt = str(cli.resume_from) if cli.resume_from else None
    stopped: NonFiniteLossError | None = None
    try:
        trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, weights_only=True)
    except NonFiniteLossError as err:  # the summary of the best (finite) checkpoint, then out
        stopped = err
    if not trainer.is_global_zero:
        if stopped is not None:
            raise stopped
        return
    history: ValidationHistory = _callback(trainer, ValidationHistory)
    tasks = _tasks(cli)
    summary: dict[str, Any] = {}
    confusion: dict[str, Any] = {}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or callback.monitor in (None, "step"):
            continue
        score = None if callback.best_model_score is None else float(callback.best_model_score)
        entry = history.best(callback.monitor, callback.mode, score)
        if entry is None:
            continue
        covered = _tasks_of_monitor(callback.monitor, tasks)
        for name in covered:
            metrics = task_metrics(entry["metrics"], "val", name)
            if metrics:
                summary[name] = {**metrics, "epoch": entry["epoch"], "step": entry["step"]}
            if name in entry["confusion"]:
                confusion[name] = entry["confusion"][name]
    unscored = [name for name in tasks if name not in summary]
    for name in unscored:
        summary[name] = absent_metrics(tasks[name])
    if unscored:
        print(
            f"mtl-run: warning: no validation metrics for {', '.join(unscored)} (no labelled "
            "validation samples, or no validation ran): summary.json marks them null",
            file=sys.stderr,
        )
    run = RunDir(run_dir)
    if stopped is not None:  # recorded before summary.json: a kill in between is no success
        _record_exit(run.run_info, exitcodes.NON_FINITE_LOSS, str(stopped))
    write_summary(run.summary, summary, tasks)
    plot_task_weights(run_dir)
    write_confusion_matrices(run_dir, confusion, tasks, "confusion_matrix_", "validation, best")
    _print_results("best validation", summary)
    if stopped is not None:
        raise stopped


def _record_exit(path: Path, code: int, reason: str) -> None:
    """Note in ``run_info.json`` that the fit ended with ``code`` although it wrote
    ``summary.json``, so whoever reads the run directory alone (``mtl-study status``) does not
    take it for finished; the next ``--resume`` rewrites the file without it."""
    info = json.loads(path.read_text())
    info["exit"] = {"code": code, "reason": reason}
    write_json(path, info)


def _tasks_of_monitor(monitor: str, tasks: dict[str, Any]) -> list[str]:
    """A per-task monitor ``val/<task>/<metric>`` selects for that task only."""
    parts = monitor.split("/")
    if len(parts) == 3 and parts[1] in tasks:
        return [parts[1]]
    return list(tasks)


def checkpoint_for_evaluation(cli: RunCLI) -> Path:
    """``--ckpt_path`` (a checkpoint name or path), else the run's ``best``: both resolved by
    :meth:`runtime.rundir.RunDir.checkpoint`'s rule (never freshly built weights)."""
    assert cli.run_dir is not None
    return resolve_checkpoint(cli.run_dir, cli.config.ckpt_path or RunDir.BEST)


def _evaluate(cli: RunCLI, ckpt: str) -> None:
    stage = cli.subcommand_name
    trainer, run_dir = cli.trainer, cli.run_dir
    run = trainer.validate if stage == "validate" else trainer.test
    run(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, weights_only=True)
    if not trainer.is_global_zero:
        return
    prefix = "val" if stage == "validate" else "test"
    tasks = _tasks(cli)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    report = {
        t: m or absent_metrics(tasks[t])
        for t, m in per_task_report(metrics, prefix, list(tasks)).items()
    }
    write_json(RunDir(run_dir).stage_metrics(stage), report)
    model = cli.model
    recorded = model.confusion_matrices if isinstance(model, RecordsConfusion) else {}
    confusion = recorded.get(prefix, {})
    write_confusion_matrices(
        run_dir,
        {t: cm.tolist() for t, cm in confusion.items()},
        tasks,
        f"{stage}_confusion_matrix_",
        stage,
    )
    _print_results(stage, report)


def _predict(cli: RunCLI, ckpt: str) -> None:
    trainer, run_dir = cli.trainer, cli.run_dir
    batches = trainer.predict(
        cli.model,
        datamodule=cli.datamodule,
        ckpt_path=ckpt,
        return_predictions=True,
        weights_only=True,
    )
    if trainer.is_global_zero and batches:
        for path in write_predictions(run_dir, batches, _tasks(cli)):
            print(f"wrote {path}")


def _print_results(title: str, report: dict[str, dict[str, float]]) -> None:
    print(f"\nPer-task results ({title}):")
    for task, metrics in report.items():
        shown = ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={'n/a' if v is None else v}"
            for k, v in metrics.items()
            if not k.startswith("f1_")
        )
        print(f"  {task}: {shown}")
