"""Launching a study's runs on this machine: ``mtl-run fit`` children, a few at a time.

Each run is a child process in its own process group, so a terminal's Ctrl-C reaches only the
launcher, which then stops every child itself (SIGTERM to the group, SIGKILL after a grace
period). On Linux each child also asks the kernel for SIGTERM when the launcher dies
(``PR_SET_PDEATHSIG``), so a SIGKILLed launcher leaves no run behind. A lock on the study
folder keeps a second launcher out. Rerunning skips finished runs (exit status 0), resumes
interrupted ones (stopped by a signal) from their newest checkpoint (``mtl-run fit
--resume``) and reruns failed ones (any other status) only with ``--retry-failed``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from compiler.errors import ConfigError
from scripts.study_state import (
    LOCK,
    RunState,
    Study,
    StudyRun,
    child_environment,
    fit_command,
    read_status,
    stale_attempt_s,
    state_of_exit,
    write_status,
)

#: Seconds a stopped child gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


def runs_to_launch(states: list[RunState], retry_failed: bool) -> tuple[list[StudyRun], dict]:
    """Runs this launch starts or resumes, and why each other one is left alone."""
    chosen: list[StudyRun] = []
    skipped: dict[str, str] = {}
    for st in states:
        if st.state == "done":
            skipped[st.run.name] = "done"
        elif st.state == "running":
            skipped[st.run.name] = "running (another launcher)"
        elif st.state == "failed" and not retry_failed:
            skipped[st.run.name] = "failed (pass --retry-failed to run it again)"
        else:
            chosen.append(st.run)
    return chosen, skipped


@contextmanager
def study_lock(study: Study) -> Iterator[None]:
    """Hold the study's launcher lock (released by the kernel if the launcher dies)."""
    import fcntl

    path = study.folder / LOCK
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"{study.folder} is being launched by another mtl-study run "
                "(its lock is held); wait for it or stop it first"
            ) from None
        yield


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A pre-exec hook asking the kernel to SIGTERM the child when the launcher dies (Linux).

    Everything is looked up before the fork: the hook itself only makes system calls.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:  # runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)

    return setup


def start_run(
    study: Study,
    run: StudyRun,
    env: dict[str, str],
    launcher: str,
    extra: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen, IO]:
    """Start ``mtl-run fit`` for one run (log appended to logs/<run>.log), recorded as running."""
    cmd = fit_command(run)
    log_path = study.log_path(run)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    record = read_status(study, run)
    stale = stale_attempt_s(record, log_path)  # an attempt that died with its launcher
    if stale:
        record["wall_s"] = float(record.get("wall_s") or 0.0) + stale
    log = Path(log_path).open("a", buffering=1)  # noqa: SIM115 - closed by finish_run
    log.write(f"\n=== mtl-study {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
    )
    record.update(
        {
            "state": "running",
            "launcher": launcher,
            "host": socket.gethostname(),
            "pid": proc.pid,
            "started": time.time(),
            "command": cmd[2:],
            "attempts": int(record.get("attempts") or 0) + 1,
            **(extra or {}),
        }
    )
    record.pop("exit_code", None)
    write_status(study, run, record)
    return proc, log


def finish_run(study: Study, run: StudyRun, code: int, log: IO, stopped: bool = False) -> str:
    """Record how a child ended; returns the run's new state."""
    record = read_status(study, run)
    started = record.get("started")
    if isinstance(started, (int, float)):
        record["wall_s"] = float(record.get("wall_s") or 0.0) + max(0.0, time.time() - started)
    record.pop("pid", None)
    state = state_of_exit(code, run.run_dir, stopped)
    record.update({"state": state, "exit_code": code, "ended": time.time()})
    write_status(study, run, record)
    log.write(f"=== mtl-study: exit code {code} ({state})\n")
    log.close()
    return state


def stop_child(proc: subprocess.Popen) -> int:
    """SIGTERM the child's process group, SIGKILL it after the grace period.

    Polls instead of ``wait()``: this also runs inside submitit's signal handler, possibly
    while the interrupted frame is itself waiting on the child.
    """
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    code = proc.poll()
    return -signal.SIGKILL if code is None else code


@dataclass
class LocalOptions:
    max_parallel: int = 1
    gpus: list[str] = field(default_factory=list)
    threads: int | None = None


@dataclass
class _Active:
    run: StudyRun
    proc: subprocess.Popen
    log: IO
    gpu: str | None


def launch_local(
    study: Study,
    runs: list[StudyRun],
    options: LocalOptions,
    show: Callable[[], None],
    event: Callable[[str], None],
) -> dict[str, str]:
    """Run ``runs`` with at most ``max_parallel`` children; returns each run's final state.

    ``show`` redraws the status table, ``event`` reports a state change. SIGINT and SIGTERM
    stop the children cleanly and end the launch with the runs left interrupted.
    """
    stopping: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    queue = list(runs)
    active: list[_Active] = []
    free_gpus = list(options.gpus)
    final: dict[str, str] = {}
    try:
        while queue or active:
            if stopping:
                for item in active:
                    code = stop_child(item.proc)
                    final[item.run.name] = finish_run(study, item.run, code, item.log, True)
                    event(f"{item.run.name}: stopped (resume it by running the study again)")
                active.clear()
                break
            while queue and len(active) < options.max_parallel:
                run = queue.pop(0)
                gpu = free_gpus.pop(0) if free_gpus else None
                env = child_environment(options.threads, gpu)
                proc, log = start_run(
                    study, run, env, "local", {"gpu": gpu} if gpu is not None else None
                )
                active.append(_Active(run, proc, log, gpu))
                how = "resumed" if "--resume" in proc.args else "started"
                event(f"{run.name}: {how} (pid {proc.pid}{f', GPU {gpu}' if gpu else ''})")
            for item in list(active):
                code = item.proc.poll()
                if code is None:
                    continue
                active.remove(item)
                if item.gpu is not None:
                    free_gpus.append(item.gpu)
                state = finish_run(study, item.run, code, item.log)
                final[item.run.name] = state
                suffix = (
                    ""
                    if state == "done"
                    else f" (exit code {code}; log: {study.log_path(item.run)})"
                )
                event(f"{item.run.name}: {state}{suffix}")
            show()
            time.sleep(0.25)
    finally:
        for item in active:  # an unexpected error in the launcher: leave no child behind
            finish_run(study, item.run, stop_child(item.proc), item.log, True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        for run in queue:
            final.setdefault(run.name, "queued")
    return final


def default_threads(max_parallel: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max_parallel)


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
