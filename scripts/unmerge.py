"""``mtl-unmerge``: turn the tasks of a run with merged heads into standalone single-task runs.

Each written ``OUT_DIR/<task>/`` is an ordinary run directory (``config.yaml``,
``checkpoints/last.ckpt`` and an identical ``best.ckpt``, ``run_info.json``), so
``mtl-run validate/test/predict``, ``mtl-eval`` and ``runtime.rundir.load_run`` use it as is.
The weights are cut by :mod:`scripts.task_cut`; nothing but the run directory is read. Before
anything is written, each cut model is checked on ``--device`` against the merged model: on a
few validation batches of the task, its outputs must equal the merged head's slice.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError, did_you_mean
from compiler.files import atomic_dir, check_output
from compiler.tree import get_path
from compiler.yamlio import dump
from runtime.protocols import KnowsDatasetTasks
from scripts.common import bad_input_exits, device_option, note

PROG = "mtl-unmerge"

EXAMPLES = """\b
Examples:
  mtl-unmerge runs/quickstart                       # every merged task -> runs/quickstart/unmerged/
  mtl-unmerge runs/quickstart --task parity -o out/  # one task, written to out/parity/
  mtl-unmerge runs/quickstart --ckpt last --force    # from last.ckpt, replacing earlier output
  mtl-unmerge runs/quickstart --device cpu           # run the output check on CPU
  mtl-eval runs/quickstart/unmerged/parity           # then score it like any run
"""


def _note(message: str) -> None:
    note(PROG, message)


def _chosen_tasks(config: dict[str, Any], run_dir: Path, tasks: tuple[str, ...]) -> list[str]:
    """The requested tasks (default: all tasks of merged decoders), checked against the run."""
    from scripts.task_cut import TASKS, merged_decoders

    merged = merged_decoders(config)
    if not merged:
        raise ConfigError(
            f"{run_dir} has no merged heads (its config's decoder_to_target gives no decoder "
            "several tasks or label slices): each task already has its own decoder, so there is "
            "nothing to unmerge"
        )
    known = list(get_path(config, TASKS) or {})
    chosen = list(dict.fromkeys(tasks)) or [t for ts in merged.values() for t in ts]
    for task in chosen:
        if task not in known:
            raise ConfigError(
                f"--task {task}: not a task of {run_dir}"
                f"{did_you_mean(task, known)}; its tasks: {', '.join(known)}"
            )
    return chosen


def _checkpoint(
    source: dict[str, Any], module: Any, state: dict, origin: dict[str, Any]
) -> dict[str, Any]:
    """A Lightning checkpoint holding weights only (no optimizer, scheduler or loop state),
    plus what the module itself records in checkpoints (e.g. its task list)."""
    import lightning

    checkpoint = {
        "state_dict": state,
        "epoch": source.get("epoch", 0),
        "global_step": source.get("global_step", 0),
        "pytorch-lightning_version": source.get("pytorch-lightning_version", lightning.__version__),
        "unmerged_from": origin,
    }
    module.on_save_checkpoint(checkpoint)
    return checkpoint


CHECK_BATCHES = 2


def _check_batches(datamodule: Any, tasks: list[str]) -> dict[str, list[Any]]:
    """Up to :data:`CHECK_BATCHES` validation batches per task (one pass, stops early)."""
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    found: dict[str, list[Any]] = {t: [] for t in tasks}
    for batch in loader if not isinstance(loader, list) else []:
        for task in batch.get("targets", {}):
            if task in found and len(found[task]) < CHECK_BATCHES:
                found[task].append(batch)
        if all(len(b) == CHECK_BATCHES for b in found.values()):
            break
    return found


def check_cut(merged: Any, single: Any, task: str, batches: list[Any], device: Any) -> None:
    """The cut model's outputs for ``task`` equal the merged model's on ``batches``."""
    import torch
    from lightning.pytorch.utilities import move_data_to_device

    merged.to(device).eval()
    single.to(device).eval()
    with torch.inference_mode():
        for batch in batches:
            inputs = move_data_to_device(batch["inputs"], device)
            want = merged.model(inputs, [task])[task]
            got = single.model(inputs, [task])[task]
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                raise click.ClickException(
                    f"internal error: the cut model of task '{task}' does not reproduce the "
                    "merged model's outputs on its validation batches; nothing was written. "
                    "Please report this with the run's config.yaml."
                )
    merged.cpu()
    single.cpu()


def unmerge(
    run_dir: Path,
    tasks: tuple[str, ...],
    ckpt: str,
    out_dir: Path | None,
    force: bool,
    argv: list[str],
    device: str | None = None,
) -> list[Path]:
    """Write one single-task run directory per chosen task; returns them."""
    import torch

    from compiler.files import write_json
    from runtime.config_errors import read_run_config
    from runtime.hardware import resolve_device
    from runtime.provenance import header_comments, run_info
    from runtime.rundir import RunDir, build_objects, config_of, load_run, resolve_checkpoint
    from scripts.task_cut import cut_state_dict, single_task_config, task_cuts

    config_path, found_dir = config_of(run_dir)
    if found_dir is None:
        raise ConfigError(f"{run_dir} is not a run directory (give the folder, not a file)")
    config = read_run_config(config_path)
    chosen = _chosen_tasks(config, run_dir, tasks)
    out_dir = out_dir or run_dir / "unmerged"
    targets = {task: out_dir / task for task in chosen}
    check_output(out_dir, "dir", flag="-o/--out-dir")
    for target in targets.values():
        check_output(target, "dir", replace=force)
    ckpt_path = resolve_checkpoint(run_dir, ckpt)
    chosen_device = resolve_device(device)

    _note(f"loading {run_dir} with {ckpt_path}")
    run = load_run(run_dir, str(ckpt_path), with_data=True)
    source = run.checkpoint_info or {}
    data = run.datamodule
    dataset_tasks = data.dataset_tasks if isinstance(data, KnowsDatasetTasks) else None
    if not isinstance(dataset_tasks, dict):
        raise ConfigError(
            f"{config_path}: the data module {type(run.datamodule).__name__} does "
            "not tell which datasets carry which task (no dataset_tasks)"
        )
    merged_model = run.module.model
    old_state = run.module.state_dict()
    cuts = task_cuts(merged_model, dataset_tasks)
    header = header_comments(config_path)["header"]
    checks = _check_batches(run.datamodule, chosen)

    prepared = []
    for task in chosen:
        cut = cuts[task]
        cut_config = single_task_config(config, cut, dataset_tasks)
        module, _ = build_objects(cut_config, True, f"the single-task config of '{task}'")
        state = cut_state_dict(old_state, merged_model, module, cut)
        module.load_state_dict(state)
        check_cut(run.module, module, task, checks[task], chosen_device)
        origin = {
            "run_dir": str(run_dir.resolve()),
            "checkpoint": str(ckpt_path.resolve()),
            "task": task,
            "decoder": cut.decoder,
            "offset": cut.offset,
            "num_outputs": cut.num_outputs,
            "decoder_outputs": cut.decoder_outputs,
            "datasets": cut.datasets,
        }
        prepared.append((cut, cut_config, _checkpoint(source, module, state, origin), origin))

    checked = sum(len(b) for b in checks.values())
    _note(
        f"checked the cut models against the merged one on {checked} validation batch(es) "
        f"on {chosen_device}"
    )
    written = []
    for cut, cut_config, checkpoint, origin in prepared:
        target = targets[cut.task]
        with atomic_dir(target) as tmp:
            out = RunDir(tmp)
            note = (
                f"# Unmerged by {PROG}: task {cut.task} (outputs {cut.offset}:"
                f"{cut.offset + cut.num_outputs} of decoder {cut.decoder}) from "
                f"{origin['run_dir']} ({ckpt_path.name})"
            )
            out.config.write_text(
                "".join(f"{line}\n" for line in [note, *header]) + dump(cut_config)
            )
            out.checkpoints.mkdir()
            for name in ("last", "best"):
                torch.save(checkpoint, out.checkpoint_file(name))
            info = run_info(argv, "unmerge", out.config, cut_config.get("seed_everything"))
            info["config"] = str(RunDir(target).config)
            write_json(out.run_info, {**info, "unmerged_from": origin})
        _note(
            f"wrote {target}/ (outputs {cut.offset}:{cut.offset + cut.num_outputs} of "
            f"{cut.decoder}'s {cut.decoder_outputs}; datasets: {', '.join(cut.datasets)})"
        )
        written.append(target)
    return written


@click.command(
    context_settings=CONTEXT_SETTINGS,
    epilog=EXAMPLES,
)
@version_option("mtl-unmerge")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="NAME",
    help="Task to write (repeatable; default: every task of a merged decoder).",
)
@click.option(
    "--ckpt",
    default="best",
    show_default=True,
    metavar="last|best|PATH",
    help="Checkpoint of RUN_DIR to cut.",
)
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(path_type=Path),
    help="Where the <task>/ run directories go (default: RUN_DIR/unmerged/).",
)
@click.option("--force", is_flag=True, help="Replace existing <task>/ output directories.")
@device_option
def main(
    run_dir: Path,
    tasks: tuple[str, ...],
    ckpt: str,
    out_dir: Path | None,
    force: bool,
    device: str | None,
) -> None:
    """Write each task of a run with merged heads as a standalone single-task run directory.

    Each OUT_DIR/<task>/ gets config.yaml (only that task: its decoder named after it, its
    task definition, the datasets carrying it) and checkpoints/last.ckpt (= best.ckpt): the
    merged output layer cut to the task's rows and any per-task tensors cut to its row, all
    other weights unchanged, optimizer state dropped. Its class probabilities equal the
    merged model's, renormalized over the task's labels.
    """
    with bad_input_exits(PROG):
        unmerge(run_dir, tasks, ckpt, out_dir, force, sys.argv[1:], device)


if __name__ == "__main__":
    main()
