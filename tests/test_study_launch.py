"""mtl-study run / status / report on tiny real studies (CPU), and its refusals."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from study_helpers import (
    REPO,
    cpu_env,
    manifest_runs,
    mtl_study,
    study_command,
    tiny_study,
    train_longer,
)

from scripts.study import main as study_main


def status_of(folder: Path, name: str) -> dict:
    path = folder / "status" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A 4-run study (all three tasks together + each alone), run with --max-parallel 2."""
    folder = tiny_study(tmp_path_factory.mktemp("study"), {"all": True, "singles": True})
    result = mtl_study("run", folder, "--max-parallel", "2")
    return folder, result


@pytest.mark.slow
def test_local_launcher_runs_every_run_two_at_a_time(finished_study):
    folder, result = finished_study
    assert result.returncode == 0, result.stderr
    names = [r["name"] for r in manifest_runs(folder)]
    assert names == ["all", "digits_low", "digits_high", "parity"]
    records = {n: status_of(folder, n) for n in names}
    for name, record in records.items():
        assert (folder / "runs" / name / "summary.json").is_file()
        assert (folder / "runs" / name / "config.yaml").is_file()  # an ordinary run directory
        assert record["state"] == "done"
        assert record["attempts"] == 1
        assert record["exit_code"] == 0
        assert record["wall_s"] > 0
        assert "Per-task results" in (folder / "logs" / f"{name}.log").read_text()
    spans = [(r["started"], r["ended"]) for r in records.values()]
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most == 2  # two at a time, never more
    assert "4 runs: 4 done" in result.stdout
    again = mtl_study("run", folder, "--max-parallel", "2")
    assert again.returncode == 0
    assert again.stderr.count("skipped, done") == 4
    assert "nothing to launch" in again.stderr
    status = mtl_study("status", folder, "--only", "digits_*")
    assert status.returncode == 0
    assert "digits_low" in status.stdout
    assert "all " not in status.stdout
    assert "2 runs: 2 done" in status.stdout


@pytest.mark.slow
def test_report_numbers_equal_mtl_compare(finished_study):
    folder, _ = finished_study
    from scripts.compare import main as compare_main

    result = CliRunner().invoke(study_main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "report.json").read_text())
    for name in ("report.md", "report.csv"):
        assert (folder / name).stat().st_size > 0
    runs = folder / "runs"
    out = folder.parent / "compare.json"
    compared = CliRunner().invoke(
        compare_main,
        [
            str(runs / "all"),
            "--baseline",
            *(str(runs / d) for d in ("digits_low", "digits_high", "parity")),
            "--json",
            str(out),
        ],
    )
    assert compared.exit_code == 0, compared.output
    expected = json.loads(out.read_text())
    entry = next(e for e in report["combinations"] if e["combination"] == "all")
    assert entry["delta_m_pct"] == expected["delta_m_pct"]
    for task, fig in entry["tasks"].items():
        assert fig["delta_pct"] == expected["tasks"][task]["delta_pct"]
        assert fig["mean"] == expected["tasks"][task]["metrics"][fig["metric"]]["multitask"]["mean"]
    single = next(e for e in report["combinations"] if e["combination"] == "parity")
    assert single["delta_m_pct"] is None
    assert single["tasks"]["parity"]["n"] == 1
    assert report["best_overall"]["combination"] == "all"
    assert set(report["best_per_task"]) == {"digits_low", "digits_high", "parity"}
    assert f"{entry['delta_m_pct']['mean']:+.2f}" in result.output
    assert report["not_finished"] == {}
    assert len(report["runs"]) == 4


@pytest.mark.slow
def test_sigkilled_launcher_leaves_no_child_and_a_rerun_finishes_without_redoing(tmp_path):
    folder = tiny_study(tmp_path, {"singles": True}, epochs=2, datasets=("digits_low", "parity"))
    train_longer(folder, "parity")  # still training when the kill and the Ctrl-C land
    first = folder / "runs" / "digits_low"
    second = folder / "runs" / "parity"
    launcher = subprocess.Popen(
        study_command("run", folder),
        cwd=REPO,
        env=cpu_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                (first / "summary.json").exists() and any((second / "checkpoints").glob("*.ckpt"))
            ),
            what="a checkpoint",
        )
        child = status_of(folder, "parity")["pid"]
        assert alive(child)
        done_at = (first / "summary.json").stat().st_mtime_ns
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=10)
        wait_for(lambda: not alive(child), timeout=20, what="the orphaned child to die")
    finally:
        launcher.kill()
    status = mtl_study("status", folder)
    assert "interrupted" in status.stdout
    assert "1 done" in status.stdout

    # Ctrl-C on the rerun stops its child cleanly; the run stays resumable
    again = subprocess.Popen(
        study_command("run", folder),
        cwd=REPO,
        env=cpu_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(
        lambda: (
            status_of(folder, "parity").get("attempts") == 2
            and status_of(folder, "parity").get("state") == "running"
        ),
        what="the resume",
    )
    child = status_of(folder, "parity")["pid"]
    again.send_signal(signal.SIGINT)
    _, err = again.communicate(timeout=30)
    assert again.returncode == 130, err
    assert not alive(child)
    assert status_of(folder, "parity")["state"] == "interrupted"

    final = mtl_study("run", folder)
    assert final.returncode == 0, final.stderr
    assert "digits_low: skipped, done" in final.stderr
    assert (first / "summary.json").stat().st_mtime_ns == done_at  # not redone
    assert status_of(folder, "digits_low")["attempts"] == 1
    assert status_of(folder, "parity")["attempts"] == 3
    log = (folder / "logs" / "parity.log").read_text()
    launches = [line for line in log.splitlines() if line.startswith("=== mtl-study")]
    assert sum("--resume" in line for line in launches) == 2  # (mtl-run also names it on exit)
    assert (second / "summary.json").is_file()


@pytest.mark.slow
def test_failed_runs_are_retried_only_when_asked(tmp_path):
    folder = tiny_study(tmp_path, {"singles": True}, datasets=("parity",))
    config = folder / "configs" / "parity.yaml"
    good = config.read_text()
    config.write_text(good.replace("max_epochs:", "max_epochz:"))
    result = mtl_study("run", folder)
    assert result.returncode == 1
    assert "1 run(s) failed: parity" in result.stderr
    assert status_of(folder, "parity")["exit_code"] == 2
    assert "max_epochz" in (folder / "logs" / "parity.log").read_text()
    config.write_text(good)
    skipped = mtl_study("run", folder)
    assert skipped.returncode == 1
    assert "pass --retry-failed" in skipped.stderr
    retried = mtl_study("run", folder, "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert status_of(folder, "parity")["state"] == "done"


def test_bad_input_exits_2(tmp_path):
    runner = CliRunner()
    study = tiny_study(tmp_path, {"singles": True}, datasets=("parity",))
    for args, needle in [
        (["status", str(tmp_path / "nope")], "no such study folder"),
        (["run", str(tmp_path)], "has no study.yaml"),
        (["run", str(study), "--only", "zzz*"], "no run of"),
        (["report", str(study)], "no run has finished yet (1 queued)"),
        (["run", str(study), "--gpus", "0,0"], "distinct GPU ids"),
        (["run", str(study), "--partition", "gpu"], "--partition: not an option of --launcher"),
        (["run", str(study), "--launcher", "slurm", "--max-parallel", "2"], "--max-parallel"),
    ]:
        result = runner.invoke(study_main, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output
        assert "Traceback" not in result.output
    with (study / ".launcher.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(study_main, ["run", str(study)])
    assert result.exit_code == 2
    assert "being launched by another" in result.output
    assert not (study / "runs").exists()
    assert not (study / "logs").exists()
    assert runner.invoke(study_main, ["--version"]).output.startswith("mtl-study ")
    assert "report" in runner.invoke(study_main, ["-h"]).output
    dry = runner.invoke(study_main, ["run", str(study), "--dry-run"])
    assert dry.exit_code == 0
    assert "-m runtime fit" in dry.output
    assert (study / "configs" / "parity.yaml").name in dry.output
