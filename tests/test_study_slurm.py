"""mtl-study --launcher slurm: the sbatch script, and the same jobs through submitit's local
executor, including a preemption that requeues the run and resumes it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from study_helpers import REPO, cpu_env, study_command, tiny_study, train_longer

from scripts.study import main as study_main


def test_dry_run_prints_the_job_array_script(tmp_path):
    folder = tiny_study(tmp_path, {"all": True, "singles": True})
    result = CliRunner().invoke(
        study_main,
        [
            "run",
            str(folder),
            "--launcher",
            "slurm",
            "--dry-run",
            "--partition",
            "gpu",
            "--gpus-per-run",
            "1",
            "--cpus-per-run",
            "4",
            "--time",
            "90",
            "--mem-gb",
            "16",
            "--array-parallelism",
            "2",
            "--account",
            "lab",
            "--setup",
            "module load cuda",
            "--only",
            "digits_*",
            "--only",
            "all",
        ],
    )
    assert result.exit_code == 0, result.output
    script = result.stdout
    assert script.startswith("#!/bin/bash")
    for line in (
        "#SBATCH --array=0-2%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --time=90",
        "#SBATCH --mem=16GB",
        "#SBATCH --account=lab",
        "#SBATCH --job-name=mtl-study-study",
        "#SBATCH --signal=USR2@90",
        "module load cuda",
        "-m submitit.core._submit",
    ):
        assert line in script, line
    assert f"{folder.resolve()}/slurm/" in script
    assert "# array task 0: all\n# array task 1: digits_low\n# array task 2: digits_high" in script
    assert not (folder / "slurm").exists()
    assert not (folder / "status").exists()


@pytest.mark.slow
def test_local_executor_runs_the_array_and_a_preempted_run_resumes(tmp_path):
    folder = tiny_study(tmp_path, {"singles": True}, epochs=2, datasets=("parity",))
    train_longer(folder, "parity")  # still training when USR2 lands
    run_dir = folder / "runs" / "parity"
    status = folder / "status" / "parity.json"
    launcher = subprocess.Popen(
        study_command(
            "run", folder, "--launcher", "slurm", "--cluster", "local", "--wait", "--time", "10"
        ),
        cwd=REPO,
        env=cpu_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any((run_dir / "checkpoints").glob("*.ckpt")):
            assert time.monotonic() < deadline, launcher.stderr
            assert launcher.poll() is None, launcher.stderr
            time.sleep(0.2)
        record = json.loads(status.read_text())
        assert record["launcher"] == "slurm"
        assert record["attempts"] == 1
        # SLURM signals a preempted or timed-out job with USR2: the job process is mtl-run's
        # parent; submitit checkpoints (StudyJob.checkpoint) and requeues it
        job_pid = int(Path(f"/proc/{record['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        Path(f"/proc/{job_pid}/cmdline").read_bytes().index(b"submitit")
        subprocess.run(["kill", f"-{signal.SIGUSR2.value}", str(job_pid)], check=True)
        out, err = launcher.communicate(timeout=180)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, err
    assert "submitted 1 run(s) as job array" in err
    record = json.loads(status.read_text())
    assert record["state"] == "done"
    assert record["attempts"] == 2
    log = (folder / "logs" / "parity.log").read_text()
    launches = [line for line in log.splitlines() if line.startswith("=== mtl-study")]
    # one relaunch with --resume (mtl-run itself also names --resume when it is stopped)
    assert sum("--resume" in line for line in launches) == 1
    assert (run_dir / "summary.json").is_file()
    assert "1 runs: 1 done" in out
