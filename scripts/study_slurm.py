"""Launching a study on a SLURM cluster: one job array through submitit.

Each array task runs one study run: the same ``mtl-run fit`` command the local launcher runs
(``--resume`` when the run has a checkpoint), with the same status record and log. The job is
a ``submitit.helpers.Checkpointable``: when SLURM signals a time limit or a preemption,
submitit calls :meth:`StudyJob.checkpoint`, which stops ``mtl-run`` and requeues the same run;
the requeued task finds the run's checkpoint and continues with ``--resume``. submitit's local
executor runs the very same jobs on this machine (how the tests exercise this path).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.study_launch import finish_run, start_run, stop_child
from scripts.study_state import StudyRun, child_environment, load_study

SUBMITIT_FOLDER = "slurm"

try:  # submitit is in the runtime extra; its absence is reported by launch_slurm
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - exercised only without the extra
    Checkpointable = object  # type: ignore[assignment,misc]

#: The mtl-run child of the current job (module state: the job object itself is pickled).
_CHILD: list[tuple[subprocess.Popen, Any, Path, str]] = []


class StudyJob(Checkpointable):
    """One array task: train (or resume) the study run named ``name``."""

    def __init__(self, study_dir: str) -> None:
        self.study_dir = study_dir

    def __call__(self, name: str) -> str:
        study = load_study(Path(self.study_dir))
        run = next(r for r in study.runs if r.name == name)
        threads = _slurm_cpus()
        proc, log = start_run(
            study, run, child_environment(threads, None), "slurm", {"job_id": _job_id()}
        )
        _CHILD[:] = [(proc, log, Path(self.study_dir), name)]
        while proc.poll() is None:  # not wait(): see stop_child
            time.sleep(0.5)
        code = proc.returncode
        _CHILD.clear()
        state = finish_run(study, run, code, log)
        if state != "done":
            raise RuntimeError(
                f"mtl-run fit exited with code {code} for run {name}; log: {study.log_path(run)}"
            )
        return state

    def checkpoint(self, name: str) -> DelayedSubmission:
        """Time limit or preemption: stop mtl-run (its checkpoints stay) and requeue the run."""
        for proc, log, folder, child_name in _CHILD:
            study = load_study(folder)
            run = next(r for r in study.runs if r.name == child_name)
            finish_run(study, run, stop_child(proc), log, stopped=True)
        _CHILD.clear()
        return DelayedSubmission(StudyJob(self.study_dir), name)


def _slurm_cpus() -> int | None:
    value = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(value) if value and value.isdigit() else None


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    time_min: int = 60
    mem_gb: float | None = None
    array_parallelism: int = 32
    max_requeues: int = 3
    account: str | None = None
    setup: list[str] = field(default_factory=list)

    def parameters(self, job_name: str) -> dict[str, Any]:
        """submitit AutoExecutor parameters (slurm_* ones are ignored by the local executor)."""
        params: dict[str, Any] = {
            "name": job_name,
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus_per_run,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.account:
            params["slurm_account"] = self.account
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params


def sbatch_script(folder: Path, count: int, options: SlurmOptions, job_name: str) -> str:
    """The sbatch script ``launch_slurm`` submits for an array of ``count`` runs (rendered by
    submitit itself, so it also works on a machine without SLURM)."""
    from submitit.slurm.slurm import SlurmExecutor

    from runtime.compat import sbatch_script

    class ScriptOnly(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # render without srun on this machine
            return 1

    executor = ScriptOnly(folder / SUBMITIT_FOLDER / "%j", max_num_timeout=options.max_requeues)
    generic = {k.removeprefix("slurm_"): v for k, v in options.parameters(job_name).items()}
    return sbatch_script(executor, generic, count)


def launch_slurm(
    folder: Path, runs: list[StudyRun], options: SlurmOptions, job_name: str, cluster: str = "slurm"
) -> list[Any]:
    """Submit ``runs`` as one job array; returns submitit's jobs (one per run)."""
    from submitit import AutoExecutor

    executor = AutoExecutor(
        folder=folder / SUBMITIT_FOLDER / "%j",
        cluster=cluster,
        slurm_max_num_timeout=options.max_requeues,
    )
    executor.update_parameters(**options.parameters(job_name))
    job = StudyJob(str(folder.resolve()))
    return executor.map_array(job, [r.name for r in runs])
