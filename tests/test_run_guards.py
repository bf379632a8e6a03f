"""``mtl-run fit`` guards its run directory (CPU): the OS lock, a resume that does not fit
writes nothing, a fit that never trained is reused, moved/copied runs keep their checkpoint
names, damaged files and unwritable directories exit 2, stale temporaries are removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import deny_write
from runtime_toy import toy_config

from runtime.cli import main

TESTS = Path(__file__).parent


def run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(toy_config(max_epochs=1)))
    return tmp_path


@pytest.fixture
def trained(workdir, capsys) -> Path:
    assert run(capsys, "toy.yaml", "--run-dir", "out")[0] == 0
    return workdir / "out"


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_a_second_process_on_the_run_directory_is_refused(trained, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from runtime.run_lock import lock_run_dir; lock_run_dir(Path(sys.argv[1])); "
            "print('locked', flush=True); time.sleep(120)",
            str(trained),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(trained)
        for extra in (["--resume"], ["--force"]):
            code, err = run(capsys, "toy.yaml", "--run-dir", trained, *extra)
            assert code == 2, err
            assert "in use by another mtl-run process" in err
            assert str(holder.pid) in err
        assert snapshot(trained) == before
    finally:
        holder.kill()  # SIGKILL: the OS drops the lock with the process
        holder.wait(timeout=30)
    code, err = run(capsys, "toy.yaml", "--run-dir", trained, "--resume", "--trainer.max_epochs=2")
    assert code == 0, err


@pytest.mark.parametrize(
    "override",
    [
        "--model.init_args.model.init_args.encoder=[{class_path: runtime.encoders.MLPEncoder, "
        "init_args: {in_features: 8, hidden_sizes: [24, 16]}}]",
        "--model.init_args.model.init_args.decoders.ClassificationHead=[{class_path: "
        "runtime.heads.ClassificationHead, init_args: {in_features: 16, num_outputs: 7}}]",
    ],
)
def test_a_resume_that_does_not_fit_writes_nothing(trained, capsys, override):
    before = snapshot(trained)
    code, err = run(capsys, "toy.yaml", "--run-dir", trained, "--resume", override)
    assert code == 2, err
    assert "does not fit" in err
    assert "Traceback" not in err
    assert snapshot(trained) == before  # config.yaml, run_info.json, metrics.csv untouched


def test_a_fit_that_never_trained_is_reused_without_force(workdir, capsys):
    broken = toy_config(max_epochs=1)
    broken["model"]["init_args"]["model"]["init_args"]["encoder"][0]["init_args"][
        "hidden_sizes"
    ] = [12]  # the head expects 16 features: fails on the first batch
    (workdir / "broken.yaml").write_text(yaml.safe_dump(broken))
    code, _ = run(capsys, "broken.yaml", "--run-dir", "out")
    assert code != 0
    assert not (workdir / "out/config.yaml").exists()
    assert not (workdir / "out/run_info.json").exists()
    code, err = run(capsys, "toy.yaml", "--run-dir", "out")
    assert code == 0, err
    assert (workdir / "out/checkpoints/last.ckpt").is_file()


def test_an_untrained_leftover_of_an_older_version_is_reused(workdir, capsys):
    (workdir / "out").mkdir()
    (workdir / "out/config.yaml").write_text("old: config\n")
    (workdir / "out/run_info.json").write_text("{}")
    code, err = run(capsys, "toy.yaml", "--run-dir", "out")
    assert code == 0, err
    assert "never saved a checkpoint" in err


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_moved_or_copied_run_resumes_with_the_same_checkpoint_names(
    trained, workdir, capsys, how
):
    target = workdir / "elsewhere" / "run"
    target.parent.mkdir()
    (shutil.copytree if how == "copy" else shutil.move)(trained, target)
    code, err = run(capsys, "toy.yaml", "--run-dir", target, "--resume", "--trainer.max_epochs=3")
    assert code == 0, err
    names = sorted(p.name for p in (target / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"]
    last = torch.load(target / "checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    states = [s for k, s in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert states
    assert all(Path(s["dirpath"]) == (target / "checkpoints").resolve() for s in states)
    best = next(s for s in states if s["monitor"] == "val/score")
    assert Path(best["best_model_path"]) == (target / "checkpoints/best.ckpt").resolve()
    if how == "copy":
        assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == [
            "best.ckpt",
            "last.ckpt",
        ]


@pytest.mark.parametrize(
    "damage",
    [
        b"\x00\x01\x02garbage\xff\xfe",
        b"epoch,step,train/loss\n0,not-a-number,0.5\n0,10,0.4\n",
        b"epoch,train/loss\n0,0.5\n",
        b"epoch,step,train/loss\n0,1,0.5,9,9\n0,2,0.4\n",
    ],
)
def test_a_damaged_metrics_csv_stops_the_resume_cleanly(trained, capsys, damage):
    (trained / "metrics.csv").write_bytes(damage)
    before = snapshot(trained)
    code, err = run(capsys, "toy.yaml", "--run-dir", trained, "--resume", "--trainer.max_epochs=2")
    assert code == 2, err
    assert "metrics.csv" in err
    assert "Traceback" not in err
    assert snapshot(trained) == before


def test_a_metrics_row_cut_short_by_a_kill_is_dropped(trained, capsys):
    with (trained / "metrics.csv").open("a") as handle:
        handle.write("0,99")  # no newline: the writer was killed mid-row
    code, err = run(capsys, "toy.yaml", "--run-dir", trained, "--resume", "--trainer.max_epochs=2")
    assert code == 0, err
    assert ",99\n" not in (trained / "metrics.csv").read_text().replace("\r", "")


def test_a_truncated_config_yaml_stops_the_resume_cleanly(trained, capsys):
    config = trained / "config.yaml"
    config.write_text(config.read_text()[: len(config.read_text()) // 3] + "\n  - [unclosed")
    code, err = run(capsys, config, "--resume")
    assert code == 2, err
    assert "config.yaml" in err
    assert "Traceback" not in err


def test_an_unwritable_run_directory_is_refused(trained, capsys, monkeypatch):
    """(A read-only folder: ``os.access`` says so, also where tests run as root.)"""
    deny_write(monkeypatch, trained)
    before = snapshot(trained)
    for extra in (["--resume"], ["--force"]):
        code, err = run(capsys, "toy.yaml", "--run-dir", trained, *extra)
        assert code == 2, err
        assert "not writable" in err
    assert snapshot(trained) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_directory_is_refused(trained, capsys):
    trained.chmod(0o555)
    try:
        for extra in (["--resume"], ["--force"], []):
            code, err = run(capsys, "toy.yaml", "--run-dir", trained, *extra)
            assert code == 2, err
    finally:
        trained.chmod(0o755)


def test_stale_checkpoint_temporaries_are_removed_on_resume(trained, capsys):
    folder = trained / "checkpoints"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = folder / f".last.ckpt.{dead}.0.tmp"
    stale.write_bytes(b"PK cut short")
    orphan = folder / f".step-3.ckpt.{dead}.0.tmp"
    orphan.write_bytes(b"PK cut short")
    time.sleep(0.01)
    code, err = run(capsys, "toy.yaml", "--run-dir", trained, "--resume", "--trainer.max_epochs=2")
    assert code == 0, err
    assert not stale.exists()
    assert not orphan.exists()
