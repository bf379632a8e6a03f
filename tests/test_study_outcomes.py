"""Where a study's run stands follows its exit status, not the mere presence of summary.json:
a run stopped on a non-finite loss (exit 3, after writing its summary) is failed, a stopped
one is interrupted and resumed, a finished one is done."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from study_helpers import mtl_study, tiny_study

from scripts.study_launch import finish_run, runs_to_launch
from scripts.study_state import fit_command, load_study, run_state, state_of_exit, write_status


@pytest.fixture
def study(tmp_path):
    return load_study(tiny_study(tmp_path, {"singles": True}, datasets=("parity",)))


def _write(path: Path, data: dict, at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    os.utime(path, (at, at))


def _attempt(run_dir: Path, started: float, summary_at: float | None, exit_code=None) -> None:
    """A run directory as ``mtl-run fit`` leaves it: run_info.json at the attempt's start
    (with the failing exit it noted), summary.json at its end, a checkpoint."""
    info = {"stage": "fit"} if exit_code is None else {"exit": {"code": exit_code}}
    _write(run_dir / "run_info.json", info, started)
    if summary_at is not None:
        _write(run_dir / "summary.json", {"parity": {"accuracy": 0.5}}, summary_at)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")


@pytest.mark.parametrize(
    ("code", "summary", "state"),
    [
        (0, True, "done"),
        (0, False, "failed"),
        (3, True, "failed"),  # a non-finite loss: the summary of the best finite checkpoint
        (1, True, "failed"),
        (2, False, "failed"),
        (130, True, "interrupted"),
        (143, True, "interrupted"),
        (137, False, "interrupted"),
        (-9, True, "interrupted"),  # killed by a signal, as subprocess reports it
        (-15, False, "interrupted"),
    ],
)
def test_exit_status_decides_the_state(tmp_path, code, summary, state):
    if summary:
        _write(tmp_path / "summary.json", {}, time.time())
    assert state_of_exit(code, tmp_path) == state


def test_a_failed_exit_with_a_summary_is_failed_and_not_relaunched(study):
    run = study.runs[0]
    _attempt(run.run_dir, 1000.0, 1010.0)
    write_status(study, run, {"state": "failed", "exit_code": 3, "ended": 1011.0, "attempts": 1})
    state = run_state(study, run, local_alive=False)
    assert state.state == "failed"
    chosen, skipped = runs_to_launch([state], retry_failed=False)
    assert chosen == []
    assert "--retry-failed" in skipped[run.name]
    chosen, _ = runs_to_launch([state], retry_failed=True)
    assert chosen == [run]


def test_finish_run_records_exit_3_as_failed(study):
    run = study.runs[0]
    _attempt(run.run_dir, time.time(), time.time())
    write_status(study, run, {"state": "running", "started": time.time()})
    log = study.log_path(run)
    log.parent.mkdir(parents=True, exist_ok=True)
    assert finish_run(study, run, 3, Path(log).open("a")) == "failed"  # noqa: SIM115 - closed there
    assert finish_run(study, run, 143, Path(log).open("a")) == "interrupted"  # noqa: SIM115
    assert finish_run(study, run, 0, Path(log).open("a")) == "done"  # noqa: SIM115
    assert finish_run(study, run, 3, Path(log).open("a"), stopped=True) == "interrupted"  # noqa: SIM115


def test_the_run_directory_alone_tells_failed_done_and_interrupted(study):
    """Runs launched elsewhere (no status record): what mtl-run left in the run directory."""
    run = study.runs[0]
    _attempt(run.run_dir, 1000.0, 1010.0, exit_code=3)
    assert run_state(study, run, local_alive=False).state == "failed"
    _attempt(run.run_dir, 1000.0, 1010.0)
    assert run_state(study, run, local_alive=False).state == "done"
    # resumed by hand, then killed: the summary is the previous attempt's
    _attempt(run.run_dir, 2000.0, None)
    assert run_state(study, run, local_alive=False).state == "interrupted"


def test_an_interrupted_run_is_resumed(study):
    run = study.runs[0]
    # its launcher died while the run trained on after a summary of an earlier attempt
    _attempt(run.run_dir, 2000.0, None)
    _write(run.run_dir / "summary.json", {}, 1500.0)
    write_status(study, run, {"state": "running", "launcher": "local", "started": 2000.0})
    state = run_state(study, run, local_alive=False)
    assert state.state == "interrupted"
    chosen, _ = runs_to_launch([state], retry_failed=False)
    assert chosen == [run]
    assert "--resume" in fit_command(run)
    # stopped by SIGTERM after writing its summary: interrupted too
    write_status(study, run, {"state": "interrupted", "exit_code": 143, "ended": 2100.0})
    assert run_state(study, run, local_alive=False).state == "interrupted"


def test_a_run_restarted_by_hand_after_its_recorded_end_is_judged_by_its_directory(study):
    run = study.runs[0]
    write_status(study, run, {"state": "failed", "exit_code": 3, "ended": 1500.0})
    _attempt(run.run_dir, 2000.0, 2100.0)  # mtl-run --resume by hand, finished
    assert run_state(study, run, local_alive=False).state == "done"


@pytest.mark.slow
def test_a_real_run_stopped_on_a_non_finite_loss_is_reported_failed(tmp_path):
    folder = tiny_study(tmp_path, {"singles": True}, datasets=("parity",))
    config = folder / "configs" / "parity.yaml"
    config.write_text(config.read_text().replace("lr: 0.01", "lr: 1.0e+30"))  # diverges
    result = mtl_study("run", folder)
    assert result.returncode == 1, result.stderr
    assert "1 run(s) failed: parity" in result.stderr
    run_dir = folder / "runs" / "parity"
    assert (run_dir / "summary.json").is_file()  # written, yet not done
    assert json.loads((run_dir / "run_info.json").read_text())["exit"]["code"] == 3
    record = json.loads((folder / "status" / "parity.json").read_text())
    assert record["state"] == "failed"
    assert record["exit_code"] == 3
    status = mtl_study("status", folder)
    assert "1 failed" in status.stdout
    assert "done" not in status.stdout
    again = mtl_study("run", folder)
    assert "pass --retry-failed" in again.stderr
    assert "skipped, done" not in again.stderr
    shutil.rmtree(folder / "status")  # as if launched elsewhere: the run directory says it
    status = mtl_study("status", folder)
    assert "1 failed" in status.stdout
    assert "done" not in status.stdout
