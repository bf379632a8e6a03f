"""Loading a run directory back: its config, model, data and a chosen checkpoint.

The one place that turns a run directory (or a run config) into live objects, so companion
commands (``mtl-eval``, ``mtl-unmerge``, ``mtl-throughput``, ``mtl-ckpt-convert``) never
re-implement model loading. Objects are built by jsonargparse from ``class_path`` /
``init_args``, exactly as ``mtl-run`` builds them; checkpoints load with ``weights_only``.
"""

from __future__ import annotations

import copy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule

from compiler.files import check_output, remove_stale_temps_in
from runtime.checkpoints import load_checkpoint
from runtime.config_errors import ConfigError, explain_argument_error, first_line, load_yaml
from runtime.data.validate import expect_tasks
from runtime.run_lock import LOCK_NAME, lock_run_dir
from runtime.state_mismatch import describe_mismatch, shapes_of

CONFIG_NAME = "config.yaml"
CHECKPOINTS = "checkpoints"


@dataclass
class LoadedRun:
    """A run's live objects and where they came from."""

    config_path: Path
    config: dict[str, Any]
    module: LightningModule
    datamodule: LightningDataModule | None
    checkpoint_path: Path | None
    run_dir: Path | None
    #: The loaded checkpoint's epoch, global step and Lightning version (weights aside).
    checkpoint_info: dict[str, Any] | None = None


def config_of(target: Path) -> tuple[Path, Path | None]:
    """(config file, run directory or None) for a run directory or a run config file."""
    if target.is_dir():
        config = target / CONFIG_NAME
        if not config.is_file():
            raise ConfigError(f"{target} is not a run directory: it has no {CONFIG_NAME}")
        return config, target
    if not target.exists():
        raise ConfigError(f"{target}: no such run directory or run config")
    return target, None


def resolve_checkpoint(run_dir: Path | None, ckpt: str) -> Path:
    """``last`` / ``best`` (in the run's checkpoints/) or an explicit checkpoint path."""
    if ckpt in ("last", "best"):
        if run_dir is None:
            raise ConfigError(f"--ckpt {ckpt} needs a run directory, not a config file")
        path = run_dir / CHECKPOINTS / f"{ckpt}.ckpt"
        if not path.is_file():
            raise ConfigError(f"{run_dir}: no {ckpt} checkpoint ({path} is missing)")
        return path
    path = Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded without running code; corrupt files are ConfigErrors."""
    try:
        checkpoint = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input here
        raise ConfigError(f"{path}: not a loadable checkpoint ({first_line(exc)})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


def check_fits(path: Path, checkpoint: dict[str, Any], module: Any, model_name: str) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` exactly, naming the first few
    missing, unexpected and wrongly shaped tensors (before anything loads or is written)."""
    problem = describe_mismatch(
        shapes_of(module.state_dict()),
        shapes_of(checkpoint["state_dict"]),
        "the checkpoint",
        model_name,
    )
    if problem is not None:
        raise ConfigError(f"{path} does not fit {model_name}: {problem}")


def build_objects(
    config: dict[str, Any], with_data: bool = True, where: str = "run config"
) -> tuple[LightningModule, LightningDataModule | None]:
    """Instantiate the config's ``model`` (and ``data``) through jsonargparse."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    # deep copies: jsonargparse replaces nested dicts by Namespaces in place
    sections = {"model": copy.deepcopy(config.get("model"))}
    if with_data:
        parser.add_subclass_arguments(LightningDataModule, "data", required=True)
        sections["data"] = copy.deepcopy(config.get("data"))
    try:
        parsed = parser.parse_object(sections)
        objects = parser.instantiate_classes(parsed)
    except Exception as exc:  # noqa: BLE001 - jsonargparse and constructors: bad config
        reason = explain_argument_error(exc, config)  # the key path and the real reason
        raise ConfigError(f"{where}: cannot build the model/data: {reason}") from None
    datamodule = objects.get("data") if with_data else None
    expect_tasks(datamodule, getattr(objects.model, "tasks", {}))  # labels checked on setup
    return objects.model, datamodule


def load_run(target: str | Path, ckpt: str | None = "best", with_data: bool = True) -> LoadedRun:
    """Build a run's model (and data) and load a checkpoint into it.

    ``target`` is a run directory (its ``config.yaml``) or a run config file; ``ckpt`` is
    ``best``, ``last``, a path, or None for the random initial weights.
    """
    config_path, run_dir = config_of(Path(target))
    config = load_yaml(config_path)
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(f"{config_path}: not a run config (no 'model' section)")
    module, datamodule = build_objects(config, with_data, str(config_path))
    checkpoint_path = info = None
    if ckpt is not None:
        checkpoint_path = resolve_checkpoint(run_dir, ckpt)
        checkpoint = read_checkpoint(checkpoint_path)
        check_fits(checkpoint_path, checkpoint, module, f"the model of {config_path}")
        module.load_state_dict(checkpoint["state_dict"])
        info = {
            k: checkpoint[k]
            for k in ("epoch", "global_step", "pytorch-lightning_version")
            if k in checkpoint
        }
    module.eval()
    return LoadedRun(config_path, config, module, datamodule, checkpoint_path, run_dir, info)


def has_trained(run_dir: Path) -> bool:
    """Whether a fit in ``run_dir`` saved any checkpoint (one that never did can be reused)."""
    folder = run_dir / CHECKPOINTS
    return folder.is_dir() and any(folder.glob("*.ckpt"))


def clear_run_dir(run_dir: Path) -> None:
    """Delete what a run directory holds (its lock file aside)."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def create_run_dir(run_dir: Path, lock: bool) -> None:
    """Create the run directory (once the run's objects are built) and, for a fit's
    launching process, take its lock before anything is written into it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if lock:
        lock_run_dir(run_dir)


def prepare_fit_dir(
    run_dir: Path, resume: bool, force: bool, launcher: bool
) -> tuple[Path, int] | None:
    """Check (and lock, if it exists) the run directory of a fit; the checkpoint to resume.

    Everything is checked before anything is written: a regular file or an unwritable
    folder, a directory in use (the lock), a trained run without ``--resume``/``--force``,
    a foreign folder, a resume without checkpoint or with a corrupt ``metrics.csv``. A
    directory whose earlier fit never saved a checkpoint is reused without ``--force``.
    Stale temporaries of killed checkpoint writes are removed. DDP workers (``launcher``
    False) only look up the checkpoint; the launcher already checked and locked.
    """
    from runtime.checkpoints import newest_loadable
    from runtime.csv_log import METRICS_NAME, kept_rows

    check_output(run_dir, "dir", flag="--run-dir")
    if not launcher:
        return newest_loadable(run_dir / CHECKPOINTS) if resume else None
    if resume:
        if not run_dir.is_dir():
            raise ConfigError(f"--resume: no checkpoint to resume: {run_dir} does not exist")
        lock_run_dir(run_dir)
        remove_stale_temps_in(run_dir / CHECKPOINTS, any_owner=True)
        remove_stale_temps_in(run_dir, any_owner=True)
        found = newest_loadable(run_dir / CHECKPOINTS)
        if found is None:
            raise ConfigError(f"--resume: no checkpoint to resume in {run_dir}/{CHECKPOINTS}")
        metrics = run_dir / METRICS_NAME
        if metrics.is_file():
            kept_rows(metrics, found[1])  # refuse a corrupt metrics.csv before writing
        return found
    entries = [e for e in run_dir.iterdir() if e.name != LOCK_NAME] if run_dir.is_dir() else []
    ours = (run_dir / "run_info.json").exists() or (run_dir / LOCK_NAME).exists()
    if entries and not ours and force:
        raise ConfigError(
            f"--force: {run_dir} is not an mtl-run run directory (no run_info.json)"
            "; refusing to delete it"
        )
    if entries and (has_trained(run_dir) or not ours) and not force:
        from runtime.entry import existing_run_dir_message

        raise ConfigError(existing_run_dir_message(run_dir))
    if not run_dir.is_dir():
        return None  # created (and locked) once everything is built: see create_run_dir
    lock_run_dir(run_dir)
    if entries:
        if not force:
            print(
                f"mtl-run: reusing {run_dir}: its earlier fit never saved a checkpoint",
                file=sys.stderr,
            )
        clear_run_dir(run_dir)
    return None
