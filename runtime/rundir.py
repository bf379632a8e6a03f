"""The run directory: the one place that knows its files, and loading a run back.

:class:`RunDir` names every file a run directory holds and resolves a checkpoint request
(``best``, ``last``, ``best-<task>``, ``step-<N>`` or a path) by one rule, stated on
:meth:`RunDir.checkpoint`; every command (``mtl-run validate|test|predict``, ``mtl-eval``,
``mtl-unmerge``, ``mtl-throughput``, ``mtl-ckpt-convert``, ``init_from``) resolves through it.

:func:`load_run` turns a run directory (or a run config) into live objects, so companion
commands never re-implement model loading. Objects are built by jsonargparse from
``class_path`` / ``init_args``, exactly as ``mtl-run`` builds them; checkpoints load with
``weights_only``. Lightning and torch are imported only where a function needs them, so the
front door of ``mtl-run`` and ``mtl-study status`` stay fast.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.files import check_output, remove_stale_temps_in
from runtime.config_errors import (
    ConfigError,
    explain_argument_error,
    first_line,
    read_run_config,
)
from runtime.run_lock import LOCK_NAME, lock_run_dir
from runtime.state_mismatch import describe_mismatch, shapes_of

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, LightningModule

#: Checkpoint names (``checkpoints/<name>.ckpt``) a request may give instead of a path: a
#: bare word (no ``/``, no ``.``), so ``best-old.ckpt`` or ``./last`` stay paths.
CHECKPOINT_NAME = re.compile(r"(best|last|best-[^/\\.]+|step-\d+)")


def _note(message: str) -> None:
    print(message, file=sys.stderr)


class RunDir:
    """The files of one run directory (see docs/file-formats.md#the-run-directory).

    No other module spells these names: ask a ``RunDir`` for a file's path.
    """

    CONFIG = "config.yaml"
    RUN_INFO = "run_info.json"
    SUMMARY = "summary.json"
    METRICS = "metrics.csv"
    CHECKPOINTS = "checkpoints"
    PREDICTIONS = "predictions"
    TENSORBOARD = "tensorboard"
    LOCK = LOCK_NAME
    SUFFIX = ".ckpt"
    #: checkpoint names: the best score, the latest state, ``step-<N>`` every N steps
    BEST = "best"
    LAST = "last"
    STEP_TEMPLATE = "step-{step}"  # a ModelCheckpoint ``filename`` template

    @classmethod
    def best_of(cls, task: str) -> str:
        """The name of a task's own best checkpoint (per-task monitors)."""
        return f"{cls.BEST}-{task}"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def run_info(self) -> Path:
        return self.path / self.RUN_INFO

    def read_run_info(self) -> dict[str, Any]:
        """``run_info.json`` as a mapping; empty when it is missing, unreadable or not a
        JSON object (the readers only look things up in it)."""
        try:
            info = json.loads(self.run_info.read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    def info(self, stage: str) -> Path:
        """``run_info.json`` for a fit, ``<stage>_info.json`` for validate/test/predict."""
        return self.run_info if stage == "fit" else self.path / f"{stage}_info.json"

    def stage_metrics(self, stage: str) -> Path:
        """``validate_metrics.json`` / ``test_metrics.json``."""
        return self.path / f"{stage}_metrics.json"

    def checkpoint_file(self, name: str) -> Path:
        """``checkpoints/<name>.ckpt`` (``best``, ``last``, ``best-<task>``, ``step-<N>``)."""
        return self.checkpoints / f"{name}{self.SUFFIX}"

    def checkpoint_files(self) -> list[Path]:
        """Every checkpoint the run saved (sorted by name)."""
        folder = self.checkpoints
        return sorted(folder.glob(f"*{self.SUFFIX}")) if folder.is_dir() else []

    def resumable_checkpoints(self) -> list[Path]:
        """The checkpoints ``--resume`` may continue from: last and step ones, not best ones
        (a best checkpoint is an older state than the run reached)."""
        return [p for p in self.checkpoint_files() if not p.stem.startswith(self.BEST)]

    def newest_resumable(self) -> tuple[Path, int] | None:
        """(path, global step) of the newest resumable checkpoint that loads (what
        ``--resume`` continues from); a file cut short by a killed process is skipped."""
        from runtime.checkpoints import load_checkpoint

        candidates = sorted(
            self.resumable_checkpoints(), key=lambda p: p.stat().st_mtime_ns, reverse=True
        )
        for path in candidates:
            try:
                step = int(load_checkpoint(path).get("global_step", 0))
            except Exception:  # any unreadable file is skipped, not fatal
                continue
            return path, step
        return None

    def has_checkpoint(self) -> bool:
        """Whether a fit in this directory saved any checkpoint (one that never did is reused)."""
        return bool(self.checkpoint_files())

    def is_run(self) -> bool:
        """Whether this is a directory ``mtl-run`` saved a run config into."""
        return self.config.is_file() and self.run_info.exists()

    def checkpoint(self, request: str, note: Callable[[str], None] = _note) -> Path:
        """The checkpoint file a request names. THE rule, used by every command:

        * ``last``, ``best-<task>``, ``step-<N>`` name ``checkpoints/<request>.ckpt``;
        * ``best`` names ``checkpoints/best.ckpt``. A run that never recorded a validation
          score (no validation ran before it ended) has no ``best.ckpt``: ``best`` then means
          ``last.ckpt``, and ``note`` says so (on stderr);
        * anything else is a checkpoint path;
        * a checkpoint that is not there is a :class:`ConfigError` naming what the run has.
          Nothing falls back to freshly built weights: only an explicit "no checkpoint"
          (``load_run(..., ckpt=None)``, ``mtl-throughput --ckpt none``) evaluates those.
        """
        if not CHECKPOINT_NAME.fullmatch(request):
            path = Path(request)
            if not path.is_file():
                raise ConfigError(f"checkpoint {path} does not exist")
            return path
        path = self.checkpoint_file(request)
        if path.is_file():
            return path
        last = self.checkpoint_file(self.LAST)
        if request == self.BEST and last.is_file():
            note(
                f"{self.path} has no best checkpoint (it recorded no validation score): "
                f"using {last}"
            )
            return last
        saved = ", ".join(p.stem for p in self.checkpoint_files()) or "none"
        where = "is not a run directory" if not self.config.is_file() else "is missing"
        raise ConfigError(
            f"{self.path}: no {request} checkpoint ({path} {where}; checkpoints saved: {saved})"
        )

    def default_checkpoint(self, note: Callable[[str], None] = _note) -> Path:
        """What a command evaluates when no checkpoint is named: ``best`` by the rule of
        :meth:`checkpoint` (so ``last.ckpt`` for a run that never validated)."""
        return self.checkpoint(self.BEST, note)

    def existing_message(self) -> str:
        """Why a fit refuses to start in this (already used) directory."""
        return (
            f"run directory {self.path} already exists: pass --resume to continue it, "
            "--force to delete it and start over, or --run-dir for another directory"
        )

    @classmethod
    def default_for(cls, config_path: Path) -> RunDir:
        """``runs/<config stem>/`` (without a ``.run`` suffix), or the run directory a
        ``config.yaml`` was saved in."""
        if config_path.name == cls.CONFIG and RunDir(config_path.parent).run_info.exists():
            return cls(config_path.parent)
        stem = config_path.stem
        return cls(Path("runs") / (stem.removesuffix(".run") or stem))  # x.run.yaml -> x


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


def config_of(target: Path) -> tuple[Path, RunDir | None]:
    """(config file, run directory or None) for a run directory or a run config file."""
    if target.is_dir():
        run = RunDir(target)
        if not run.config.is_file():
            raise ConfigError(f"{target} is not a run directory: it has no {RunDir.CONFIG}")
        return run.config, run
    if not target.exists():
        raise ConfigError(f"{target}: no such run directory or run config")
    return target, None


def resolve_checkpoint(run_dir: Path | RunDir | None, ckpt: str) -> Path:
    """A ``--ckpt`` value: a name resolved in the run directory by :meth:`RunDir.checkpoint`'s
    rule (which needs a run directory), or an explicit checkpoint path."""
    if run_dir is None:
        if CHECKPOINT_NAME.fullmatch(ckpt):
            raise ConfigError(f"--ckpt {ckpt} needs a run directory, not a config file")
        return RunDir(".").checkpoint(ckpt)
    return RunDir(run_dir).checkpoint(ckpt)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, loaded without running code; corrupt files are ConfigErrors."""
    from runtime.checkpoints import load_checkpoint

    try:
        checkpoint = load_checkpoint(path)
    except Exception as exc:  # any unreadable file is bad input here
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
    from lightning.pytorch import LightningDataModule, LightningModule

    from runtime.data.validate import expect_tasks
    from runtime.protocols import HasTasks

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
    except Exception as exc:  # jsonargparse and constructors: bad config
        reason = explain_argument_error(exc, config)  # the key path and the real reason
        raise ConfigError(f"{where}: cannot build the model/data: {reason}") from None
    datamodule = objects.get("data") if with_data else None
    tasks = objects.model.tasks if isinstance(objects.model, HasTasks) else {}
    expect_tasks(datamodule, tasks)  # labels checked on setup
    return objects.model, datamodule


def load_run(target: str | Path, ckpt: str | None = "best", with_data: bool = True) -> LoadedRun:
    """Build a run's model (and data) and load a checkpoint into it.

    ``target`` is a run directory (its ``config.yaml``) or a run config file; ``ckpt`` is a
    checkpoint request (:meth:`RunDir.checkpoint`), or None for the random initial weights.
    """
    config_path, run = config_of(Path(target))
    run_dir = run.path if run is not None else None
    config = read_run_config(config_path)
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
    from runtime.csv_log import kept_rows

    check_output(run_dir, "dir", flag="--run-dir")
    run = RunDir(run_dir)
    if not launcher:
        return run.newest_resumable() if resume else None
    if resume:
        if not run_dir.is_dir():
            raise ConfigError(f"--resume: no checkpoint to resume: {run_dir} does not exist")
        lock_run_dir(run_dir)
        remove_stale_temps_in(run.checkpoints, any_owner=True)
        remove_stale_temps_in(run_dir, any_owner=True)
        found = run.newest_resumable()
        if found is None:
            raise ConfigError(f"--resume: no checkpoint to resume in {run.checkpoints}")
        metrics = run.metrics
        if metrics.is_file():
            kept_rows(metrics, found[1])  # refuse a corrupt metrics.csv before writing
        return found
    entries = [e for e in run_dir.iterdir() if e.name != LOCK_NAME] if run_dir.is_dir() else []
    ours = run.run_info.exists() or (run_dir / LOCK_NAME).exists()
    if entries and not ours and force:
        raise ConfigError(
            f"--force: {run_dir} is not an mtl-run run directory (no run_info.json)"
            "; refusing to delete it"
        )
    if entries and (run.has_checkpoint() or not ours) and not force:
        raise ConfigError(run.existing_message())
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
