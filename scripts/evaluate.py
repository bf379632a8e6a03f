"""``mtl-eval``: per-task metrics of a run directory (multitask, unmerged or single-task).

The run is loaded with :func:`runtime.rundir.load_run` and scored by a Lightning
``Trainer.validate``/``test`` on ``--device`` (default: cuda when available), so the figures
are the ones the runtime's task metrics log (``<split>/<task>/<metric>``); a merged model
scores each task on its own label slice, exactly as in training, so a merged run and its
unmerged parts give the same figures.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError
from compiler.files import check_output
from runtime.protocols import HasBatchSizes, HasTasks
from scripts.common import bad_input_exits, device_option, json_option, write_json_result
from scripts.metrics_table import task_table

PROG = "mtl-eval"
SPLITS = {"val": "validate", "test": "test"}

EXAMPLES = """\b
Examples:
  mtl-eval runs/quickstart                          # best checkpoint, validation split
  mtl-eval runs/quickstart --ckpt last --split test --json test.json
  mtl-eval runs/quickstart/unmerged/parity          # an mtl-unmerge output
  mtl-eval runs/quickstart --device cpu             # on CPU even when a GPU is there
"""


def _quiet() -> None:
    """Lightning's hardware banner and loader hints say nothing to an mtl-eval user."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


def evaluate(
    target: Path, ckpt: str = "best", split: str = "val", device: str | None = None
) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of a run directory's checkpoint on one split."""
    import torch
    from lightning.pytorch import Trainer

    from runtime.artifacts import per_task_report
    from runtime.hardware import (
        apply_run_settings,
        compile_model,
        out_of_memory_message,
        resolve_device,
        trainer_device,
    )
    from runtime.rundir import load_run

    _quiet()
    chosen = resolve_device(device)
    run = load_run(target, ckpt, with_data=True)
    settings = run.config.get("run") or {}
    apply_run_settings(settings)
    compile_model(run.module, settings.get("compile"))
    precision = (run.config.get("trainer") or {}).get("precision")
    click.echo(
        f"{PROG}: scoring {target} ({run.checkpoint_path}) on the {split} split, on {chosen}",
        err=True,
    )
    trainer = Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_device(chosen),
        **({"precision": precision} if precision else {}),
    )
    try:
        getattr(trainer, SPLITS[split])(run.module, datamodule=run.datamodule, verbose=False)
    except torch.OutOfMemoryError:
        data = run.datamodule
        sizes = data.batch_sizes if isinstance(data, HasBatchSizes) else None
        raise ConfigError(out_of_memory_message(str(chosen), sizes)) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    tasks = list(run.module.tasks) if isinstance(run.module, HasTasks) else []
    return {t: m for t, m in per_task_report(metrics, split, tasks).items() if m}


@click.command(
    context_settings=CONTEXT_SETTINGS,
    epilog=EXAMPLES,
)
@version_option("mtl-eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--ckpt",
    default="best",
    show_default=True,
    metavar="last|best|PATH",
    help="Checkpoint of RUN_DIR to score.",
)
@click.option("--split", type=click.Choice(list(SPLITS)), default="val", show_default=True)
@json_option('Also write {"<task>": {"<metric>": value, ...}, ...} to PATH.')
@device_option
def main(run_dir: Path, ckpt: str, split: str, json_path: Path | None, device: str | None) -> None:
    """Per-task metrics of a run directory's checkpoint, as a table (and JSON with --json).

    Tasks are scored by the runtime's own task metrics; a task that no dataset of the split
    carries is left out.
    """
    with bad_input_exits(PROG):
        if json_path is not None:
            check_output(json_path, flag="--json")
        report = evaluate(run_dir, ckpt, split, device)
        click.echo(task_table(report))
        if json_path is not None:
            write_json_result(PROG, json_path, report)


if __name__ == "__main__":
    main()
