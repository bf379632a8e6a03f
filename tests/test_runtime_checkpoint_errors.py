"""Issue 12, item 13: a truncated, random, foreign or mismatched checkpoint given to
``mtl-run validate|test|predict --ckpt_path`` or found by ``--resume`` ends in exit code 2
naming the file and, for a mismatch, the first keys and shapes; companion commands (through
``runtime.rundir.load_run``) use the same words. CPU only (toy configs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from runtime_toy import toy_config

from runtime.cli import main
from runtime.config_errors import ConfigError
from runtime.rundir import load_run
from runtime.state_mismatch import describe_mismatch

pytestmark = pytest.mark.slow  # one short fit (a few seconds, longer on a busy machine)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A fitted toy run (1 epoch) in ``<tmp>/runs/toy``, and bad checkpoints beside it."""
    root = tmp_path_factory.mktemp("ckpt_errors")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        Path("toy.yaml").write_text(yaml.safe_dump(toy_config(max_epochs=1)))
        assert main(["fit", "toy.yaml"]) == 0
    finally:
        os.chdir(cwd)
    best = root / "runs/toy/checkpoints/best.ckpt"
    data = best.read_bytes()
    (root / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (root / "random.ckpt").write_bytes(os.urandom(4096))
    torch.save({"weights": torch.zeros(3)}, root / "foreign.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    state = checkpoint["state_dict"]
    head = "model.decoders.ClassificationHead.0.net.0.weight"
    state[head] = torch.zeros(9, 16)
    state.pop("model.encoder.0.net.0.bias")
    state["model.extra.weight"] = torch.zeros(2)
    torch.save(checkpoint, root / "mismatched.ckpt")
    torch.save(
        {"state_dict": torch.load(best, weights_only=True)["state_dict"]},
        root / "weights_only.ckpt",
    )
    return root


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("truncated.ckpt", "not a loadable checkpoint"),
        ("random.ckpt", "not a loadable checkpoint"),
        ("foreign.ckpt", "not a Lightning checkpoint"),
        ("mismatched.ckpt", "[9, 16] in the checkpoint but [6, 16] in the model"),
        ("missing.ckpt", "does not exist"),
    ],
)
def test_bad_ckpt_path_exits_2_naming_file_and_tensors(
    trained, monkeypatch, capsys, stage, name, words
):
    monkeypatch.chdir(trained)
    code = main([stage, "toy.yaml", "--ckpt_path", name])
    err = capsys.readouterr().err
    assert code == 2
    assert name in err
    assert words in err
    assert "Traceback" not in err
    if name == "mismatched.ckpt":
        assert "model.encoder.0.net.0.bias" in err
        assert "model.extra.weight" in err
    assert not (trained / f"runs/toy/{stage}_info.json").exists()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("mismatched.ckpt", "model.decoders.ClassificationHead.0.net.0.weight is [9, 16]"),
        ("weights_only.ckpt", "cannot be resumed"),
    ],
)
def test_resume_onto_a_checkpoint_that_does_not_fit_writes_nothing(
    trained, tmp_path, monkeypatch, capsys, name, words
):
    monkeypatch.chdir(trained)
    run = tmp_path / "copy"
    shutil.copytree(trained / "runs/toy", run)
    before = (run / "config.yaml").read_bytes(), (run / "run_info.json").read_bytes()
    last = run / "checkpoints/last.ckpt"
    shutil.copyfile(trained / name, last)
    os.utime(last, (last.stat().st_atime + 60, last.stat().st_mtime + 60))
    code = main(["fit", "toy.yaml", "--run-dir", str(run), "--resume"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(last) in err
    assert words in err
    assert ((run / "config.yaml").read_bytes(), (run / "run_info.json").read_bytes()) == before


def test_companion_loading_names_the_mismatched_tensors(trained):
    with pytest.raises(ConfigError) as info:
        load_run(trained / "runs/toy", str(trained / "mismatched.ckpt"), with_data=False)
    message = str(info.value)
    assert "mismatched.ckpt does not fit" in message
    assert "model.decoders.ClassificationHead.0.net.0.weight is [9, 16]" in message
    assert "model.encoder.0.net.0.bias" in message
    assert "model.extra.weight" in message


def test_mismatch_description_lists_the_first_few_of_each_kind():
    expected = {f"w{i}": (2, 2) for i in range(10)}
    given = {f"w{i}": (3, 2) for i in range(6)} | {"x": (1,)}
    text = describe_mismatch(expected, given)
    assert text.startswith(
        "6 tensor(s) of another shape (w0 is [3, 2] in the checkpoint but [2, 2] in the model"
    )
    assert "and 2 more" in text
    assert "4 tensor(s) of the model missing" in text
    assert "1 tensor(s) of the checkpoint unknown to the model (x)" in text
    assert describe_mismatch(expected, expected) is None
