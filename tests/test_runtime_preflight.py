"""Issue 12, items 11, 12 and 15: ``mtl-run --check`` builds everything ``fit`` builds (data
setup and one forward pass with loss per dataset included) and refuses the same configs with
the same one paragraph and exit code 2, before anything is written; typos in nested classes'
arguments name the class and the key path with a did-you-mean; argparse abbreviations are off.
In-process runs on CPU (the toy configs set ``accelerator: cpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from runtime_toy import toy_config

from runtime.cli import main


def _model(c: dict) -> dict:
    return c["model"]["init_args"]["model"]["init_args"]


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


# (case, edit of the toy config, key path the message must name, words it must hold)
BAD_CONFIGS: list[tuple[str, Callable[[dict], None], str, str]] = [
    (
        "negative batch size",
        lambda c: c["data"]["init_args"].update(batch_size=-3),
        "at data",
        "split_size",
    ),
    (
        "head wider than its task",
        lambda c: _model(c)["decoders"]["ta"][0]["init_args"].update(num_outputs=4),
        "model.init_args.tasks.ta",
        "4 outputs",
    ),
    (
        "label slice beyond the head",
        lambda c: _model(c)["task_label_offsets"]["tb"].update(offset=4),
        "task_label_offsets.tb",
        "num_outputs 6",
    ),
    (
        "head in_features",
        lambda c: _model(c)["decoders"]["ta"][0]["init_args"].update(in_features=12),
        "decoders.ta[0]",
        "in_features=12",
    ),
    (
        "encoder in_features",
        lambda c: _model(c)["encoder"][0]["init_args"].update(in_features=6),
        "encoder[0]",
        "in_features=6",
    ),
    (
        "monitor never logged",
        lambda c: c["run"].update(monitor="val/scroe"),
        "run.monitor",
        "(did you mean 'val/score'?)",
    ),
    ("max_epochs -5", lambda c: c["trainer"].update(max_epochs=-5), "trainer.max_epochs", "-5"),
    ("max_steps -3", lambda c: c["trainer"].update(max_steps=-3), "trainer.max_steps", "-3"),
    (
        "limit_val_batches 1.5",
        lambda c: c["trainer"].update(limit_val_batches=1.5),
        "trainer.limit_val_batches",
        "1.5",
    ),
    (
        "checkpoint_every_n_steps -5",
        lambda c: c["run"].update(checkpoint_every_n_steps=-5),
        "run.checkpoint_every_n_steps",
        "-5",
    ),
    ("num_threads -1", lambda c: c["run"].update(num_threads=-1), "run.num_threads", "-1"),
    (
        "early_stopping_patience -2",
        lambda c: c["run"].update(early_stopping_patience=-2),
        "run.early_stopping_patience",
        "-2",
    ),
]


@pytest.mark.parametrize(
    ("case", "edit", "key", "words"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_check_and_fit_refuse_the_same_config_the_same_way(
    tmp_path, monkeypatch, capsys, case, edit, key, words
):
    monkeypatch.chdir(tmp_path)
    config = toy_config(merged=case == "label slice beyond the head", max_epochs=1)
    edit(config)
    Path("bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    code, check_err = _run(capsys, "--check", "bad.yaml")
    assert code == 2, check_err
    assert key in check_err
    assert words in check_err
    assert "Traceback" not in check_err
    code, fit_err = _run(capsys, "fit", "bad.yaml")
    assert code == 2
    assert fit_err == check_err
    assert not Path("runs").exists()


def test_check_reads_the_data_files_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from file_run import file_config, write_csv

    monkeypatch.chdir(tmp_path)
    Path("ok.yaml").write_text(yaml.safe_dump(file_config(write_csv(tmp_path / "a.csv"))))
    Path("gone.yaml").write_text(yaml.safe_dump(file_config(tmp_path / "gone.csv")))
    assert main(["--check", "ok.yaml"]) == 0
    assert "ok.yaml: OK" in capsys.readouterr().out
    code, err = _run(capsys, "--check", "gone.yaml")
    assert code == 2
    assert "gone.csv" in err
    assert "not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "gone.yaml", "ok.yaml"]


def test_check_leaves_the_random_state_as_it_found_it(tmp_path, monkeypatch):
    import torch

    from runtime.cli import RunCLI
    from runtime.preflight import check_before_run

    monkeypatch.chdir(tmp_path)
    Path("toy.yaml").write_text(yaml.safe_dump(toy_config()))
    cli = RunCLI("fit", Path("toy.yaml"), ["--config", "toy.yaml", "--check"])
    before = torch.get_rng_state()
    check_before_run(cli)
    assert torch.equal(before, torch.get_rng_state())


NESTED_TYPOS = [
    (
        ["--model.init_args.optimizer.init_args.lrr=0.1"],
        None,
        "model.init_args.optimizer.init_args.lrr",
        "torch.optim.AdamW",
        "lr",
    ),
    (
        [],
        lambda c: c["model"]["init_args"]["optimizer"]["init_args"].update(lrx=0.1),
        "model.init_args.optimizer.init_args.lrx",
        "torch.optim.AdamW",
        "lr",
    ),
    (
        ["--model.init_args.scheduler.init_args.warmup_step=2"],
        None,
        "model.init_args.scheduler.init_args.warmup_step",
        "WarmupCosine",
        "warmup_steps",
    ),
    (["--trainer.max_epoch=3"], None, "trainer.max_epoch", "trainer", "max_epochs"),
    (["--trainer.max_epoch", "3"], None, "trainer.max_epoch", "trainer", "max_epochs"),
    (["--run.monito=val/loss"], None, "run.monito", "run", "monitor"),
    (
        ["--data.init_args.batch_sze=3"],
        None,
        "data.init_args.batch_sze",
        "ToyDataModule",
        "batch_size",
    ),
]


@pytest.mark.parametrize(
    ("args", "edit", "key", "owner", "suggestion"), NESTED_TYPOS, ids=[t[2] for t in NESTED_TYPOS]
)
def test_typos_name_the_nested_class_key_path_and_a_suggestion(
    tmp_path, monkeypatch, capsys, args, edit, key, owner, suggestion
):
    monkeypatch.chdir(tmp_path)
    config = toy_config()
    if edit is not None:
        edit(config)
    Path("toy.yaml").write_text(yaml.safe_dump(config))
    code, err = _run(capsys, "--check", "toy.yaml", *args)
    assert code == 2
    assert f"at {key}:" in err
    assert owner in err
    assert f"(did you mean '{suggestion}'?)" in err
    assert "MultiTaskModule" not in err  # the nested class is blamed, not its owner
