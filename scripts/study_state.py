"""A study folder read back: its manifest, and where each run stands.

``study.yaml`` (written by ``mtl-make-config --sweep``) lists the runs; each run is an
ordinary run directory under ``runs/``. What the launchers know beyond the run directory
(attempts, exit code, wall time, the process) is kept per run in ``status/<run>.json``, so
``mtl-study status`` and ``report`` work the same after a local launch, a SLURM job array or a
killed launcher. Where a run stands follows the child's exit status (:func:`state_of_exit`:
0 is *done*, a stop by signal is *interrupted* and resumes, anything else is *failed*); for a
run no launcher saw end, its run directory: ``summary.json`` written by the latest attempt
(newer than that attempt's ``run_info.json``) and no failure recorded there (``mtl-run`` notes
a non-finite-loss stop, exit 3, in ``run_info.json`` before it writes the summary).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler import exitcodes
from compiler.errors import ConfigError
from runtime.rundir import RunDir

MANIFEST = "study.yaml"
STATUS = "status"
LOGS = "logs"
LOCK = ".launcher.lock"
STATES = ("queued", "running", "interrupted", "done", "failed")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass
class StudyRun:
    """One entry of the manifest, with its paths resolved in the study folder."""

    name: str
    group: list[str]
    kinds: list[str]
    tasks: list[str]
    values: dict[str, Any]
    seed: int | None
    config: Path
    run_dir: Path


@dataclass
class Study:
    folder: Path
    manifest: dict[str, Any]
    runs: list[StudyRun]

    @property
    def name(self) -> str:
        return str(self.manifest.get("study") or self.folder.name)

    def status_path(self, run: StudyRun) -> Path:
        return self.folder / STATUS / f"{run.name}.json"

    def log_path(self, run: StudyRun) -> Path:
        return self.folder / LOGS / f"{run.name}.log"

    def select(self, patterns: tuple[str, ...]) -> list[StudyRun]:
        """Runs whose name matches any glob ``pattern`` (all runs when none is given)."""
        if not patterns:
            return list(self.runs)
        chosen = [r for r in self.runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
        if not chosen:
            raise ConfigError(
                f"--only {' '.join(patterns)}: no run of {self.folder} matches "
                f"(runs: {', '.join(r.name for r in self.runs[:8])}"
                f"{', ...' if len(self.runs) > 8 else ''})"
            )
        return chosen


def load_study(folder: Path) -> Study:
    """Read and check a study folder's manifest."""
    from compiler.yamlio import load_source

    path = folder / MANIFEST
    if not folder.is_dir():
        raise ConfigError(
            f"{folder}: no such study folder (make one with mtl-make-config "
            "MAKER --sweep -o FOLDER)"
        )
    if not path.is_file():
        raise ConfigError(
            f"{folder} is not a study folder: it has no {MANIFEST} (make one with "
            "mtl-make-config MAKER --sweep -o FOLDER)"
        )
    src = load_source(path, "study manifest")
    doc = src.doc
    entries = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: not a study manifest (no 'runs' list)")
    runs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise src.error(("runs", i), "each run must be a mapping")
        for key in ("name", "config", "run_dir"):
            value = entry.get(key)
            if not isinstance(value, str) or not value:
                raise src.error(("runs", i, key), f"'{key}' must be a non-empty string")
        name = entry["name"]
        if not _NAME.fullmatch(name):
            raise src.error(("runs", i, "name"), f"run name '{name}' is not a safe file name")
        paths = {}
        for key in ("config", "run_dir"):
            rel = Path(entry[key])
            if rel.is_absolute() or ".." in rel.parts:
                raise src.error(
                    ("runs", i, key), f"'{entry[key]}' must be a path inside the study folder"
                )
            paths[key] = folder / rel
        values = entry.get("set") or {}
        runs.append(
            StudyRun(
                name,
                list(entry.get("group") or []),
                list(entry.get("kinds") or []),
                list(entry.get("tasks") or []),
                values if isinstance(values, dict) else {},
                entry.get("seed"),
                paths["config"],
                paths["run_dir"],
            )
        )
    if len({r.name for r in runs}) < len(runs):
        raise ConfigError(f"{path}: run names are not unique")
    return Study(folder, doc, runs)


def read_status(study: Study, run: StudyRun) -> dict[str, Any]:
    """The launcher's record of a run ({} when it was never launched or the file is bad)."""
    try:
        data = json.loads(study.status_path(run).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(study: Study, run: StudyRun, record: dict[str, Any]) -> None:
    from compiler.files import write_json

    write_json(study.status_path(run), record)


def has_checkpoint(run_dir: Path) -> bool:
    return RunDir(run_dir).has_checkpoint()


@dataclass
class RunState:
    run: StudyRun
    state: str
    record: dict[str, Any]
    log: Path | None = None

    @property
    def elapsed(self) -> float | None:
        """Training wall time so far (all attempts; the current one included)."""
        wall = self.record.get("wall_s")
        total = float(wall) if isinstance(wall, (int, float)) else None
        started = self.record.get("started")
        if self.record.get("state") == "running" and isinstance(started, (int, float)):
            end = time.time() if self.state == "running" else _last_write(self.log, started)
            total = (total or 0.0) + max(0.0, end - started)
        return total


def _last_write(log: Path | None, default: float) -> float:
    """When an attempt that died with its launcher ended: its log's last write."""
    try:
        return log.stat().st_mtime if log is not None else default
    except OSError:
        return default


def stale_attempt_s(record: dict[str, Any], log: Path) -> float:
    """Wall time of a recorded attempt that never reported its end (0 when there is none)."""
    started = record.get("started")
    if record.get("state") != "running" or not isinstance(started, (int, float)):
        return 0.0
    return max(0.0, _last_write(log, started) - started)


def launcher_running(study: Study) -> bool:
    """Whether a local launcher holds the study's lock right now."""
    import fcntl

    path = study.folder / LOCK
    if not path.exists():
        return False
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


#: exit statuses of a run stopped from outside (Ctrl-C, SIGTERM, or a negative signal number
#: as ``subprocess`` reports a child killed by a signal): it resumes from its checkpoint
_STOPPED = {exitcodes.INTERRUPTED, exitcodes.TERMINATED, 128 + 9}


def state_of_exit(code: int, run_dir: Path, stopped: bool = False) -> str:
    """The state a run's exit status means: *done* (0 with a summary), *interrupted*
    (stopped by a signal: resumed by the next launch) or *failed* (any other status, e.g. 3
    for a non-finite loss even though a summary was written: rerun with --retry-failed).
    A run the launcher ``stopped`` itself is *interrupted* whatever its status, unless done."""
    if code == exitcodes.OK and RunDir(run_dir).summary.is_file():
        return "done"
    if stopped or code < 0 or code in _STOPPED:
        return "interrupted"
    return "failed"


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def recorded_exit(run_dir: Path) -> int | None:
    """The failing exit status ``mtl-run`` noted in the run directory's ``run_info.json``."""
    found = RunDir(run_dir).read_run_info().get("exit")
    code = found.get("code") if isinstance(found, dict) else None
    return code if isinstance(code, int) else None


def _state_of_run_dir(run_dir: Path) -> str:
    """Where a run stands by its run directory alone (no launcher saw its end)."""
    summary = _mtime_ns(RunDir(run_dir).summary)
    if summary is not None:
        code = recorded_exit(run_dir)
        if code is not None:
            return state_of_exit(code, run_dir)
        info = _mtime_ns(RunDir(run_dir).run_info)
        if info is None or summary >= info:  # the latest attempt wrote it
            return "done"
    if run_dir.exists() and any(run_dir.iterdir()):
        return "interrupted"
    return "queued"


def run_state(study: Study, run: StudyRun, local_alive: bool) -> RunState:
    """Where one run stands: by the exit status the launcher recorded, else (no launcher saw
    the run end, or the run directory changed since) by its run directory."""
    record = read_status(study, run)
    log = study.log_path(run)
    recorded = record.get("state")
    if recorded == "running":
        alive = local_alive if record.get("launcher") == "local" else True
        if alive:
            return RunState(run, "running", record, log)
    elif recorded in ("done", "failed", "interrupted") and not _changed_since(record, run):
        code = record.get("exit_code")
        if isinstance(code, int):
            state = state_of_exit(code, run.run_dir, stopped=recorded == "interrupted")
        else:
            state = recorded
        return RunState(run, state, record, log)
    return RunState(run, _state_of_run_dir(run.run_dir), record, log)


def _changed_since(record: dict[str, Any], run: StudyRun) -> bool:
    """Whether the run was started again (e.g. ``mtl-run --resume`` by hand) after the end
    the launcher recorded."""
    ended = record.get("ended")
    info = _mtime_ns(RunDir(run.run_dir).run_info)
    return isinstance(ended, (int, float)) and info is not None and info > ended * 1e9


def study_states(study: Study, runs: list[StudyRun] | None = None) -> list[RunState]:
    alive = launcher_running(study)
    return [run_state(study, r, alive) for r in (study.runs if runs is None else runs)]


def fit_command(run: StudyRun) -> list[str]:
    """The ``mtl-run fit`` command that starts, resumes or restarts a run."""
    import sys

    cmd = [sys.executable, "-m", "runtime", "fit", str(run.config), "--run-dir", str(run.run_dir)]
    if has_checkpoint(run.run_dir):
        cmd.append("--resume")
    elif run.run_dir.exists() and any(run.run_dir.iterdir()):
        cmd.append("--force")  # killed before its first checkpoint: start it over
    return cmd


def child_environment(threads: int | None, gpu: str | None) -> dict[str, str]:
    """The environment of one run: its share of CPU threads, and its GPU if it has one."""
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
