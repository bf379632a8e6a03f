"""runtime.rundir.load_run: a run directory back into live objects, and every way the run
directory or its checkpoint can be unusable (each a ConfigError naming the file)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from merged_runs import fake_run, merged_config, write_checkpoint

from runtime.config_errors import ConfigError
from runtime.rundir import RunDir, load_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return fake_run(tmp_path / "run", merged_config())


def test_loads_config_weights_and_data_without_touching_the_config(run_dir):
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    run = load_run(run_dir, "last")
    assert run.run_dir == run_dir
    assert run.checkpoint_path == run_dir / "checkpoints/last.ckpt"
    assert run.config == config  # building objects leaves the config dict as plain data
    assert yaml.safe_dump(run.config)
    saved = torch.load(run.checkpoint_path, weights_only=True)["state_dict"]
    torch.testing.assert_close(
        run.module.state_dict()["model.encoder.0.net.0.weight"],
        saved["model.encoder.0.net.0.weight"],
    )
    assert not run.module.training
    assert run.datamodule.dataset_tasks["ds_a"] == ["ta", "tb"]
    fresh = load_run(run_dir / "config.yaml", None, with_data=False)
    assert fresh.datamodule is None
    assert fresh.checkpoint_path is None
    assert fresh.run_dir is None


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ("missing", "no such run directory or run config"),
        ("empty", "is not a run directory: it has no config.yaml"),
    ],
)
def test_missing_run_directory(tmp_path, where, needle):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=needle):
        load_run(tmp_path / where)


@pytest.mark.parametrize("text", ["trainer: {}\n", ""])
def test_config_that_is_not_a_run_config(run_dir, text):
    (run_dir / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"config\.yaml: not a run config \(no 'model'"):
        load_run(run_dir)


def test_a_yaml_syntax_error_is_located_not_a_missing_section(run_dir):
    (run_dir / "config.yaml").write_text("trainer: {}\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config\.yaml:3: invalid YAML: .*flow sequence"):
        load_run(run_dir)


def test_config_whose_classes_cannot_be_built(run_dir):
    config = copy.deepcopy(merged_config())
    config["model"]["init_args"]["model"]["init_args"]["encoder"][0]["class_path"] = "no.Such"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"config\.yaml: cannot build the model/data"):
        load_run(run_dir)


def test_missing_checkpoints(run_dir, capsys):
    (run_dir / "checkpoints" / "best.ckpt").unlink()
    run = load_run(run_dir)  # best: the run recorded no validation score, so last.ckpt
    assert run.checkpoint_path == run_dir / "checkpoints" / "last.ckpt"
    assert "has no best checkpoint (it recorded no validation score): using" in (
        capsys.readouterr().err
    )
    (run_dir / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(ConfigError, match=r"no best checkpoint \(.*best.ckpt is missing; "):
        load_run(run_dir)
    with pytest.raises(ConfigError, match=r"gone\.ckpt does not exist"):
        load_run(run_dir, str(run_dir / "gone.ckpt"))
    with pytest.raises(ConfigError, match="--ckpt last needs a run directory"):
        load_run(run_dir / "config.yaml", "last")


class Payload:
    """Unpickling this would run code: ``weights_only`` must refuse it."""


@pytest.mark.parametrize("corrupt", ["garbage", "empty", "truncated", "code"])
def test_corrupt_checkpoint(run_dir, corrupt):
    path = run_dir / "checkpoints" / "best.ckpt"
    good = path.read_bytes()
    if corrupt == "code":
        torch.save({"state_dict": {}, "payload": Payload()}, path)
    else:
        path.write_bytes(
            {"garbage": b"\x80\x04not torch", "empty": b"", "truncated": good[: len(good) // 2]}[
                corrupt
            ]
        )
    with pytest.raises(ConfigError, match=r"best\.ckpt: not a loadable checkpoint"):
        load_run(run_dir)


@pytest.mark.parametrize("content", [{"weights": {}}, [1, 2]])
def test_checkpoint_that_is_not_a_lightning_checkpoint(run_dir, content):
    torch.save(content, run_dir / "checkpoints" / "best.ckpt")
    with pytest.raises(ConfigError, match=r"best.ckpt: not a Lightning checkpoint \(no state_dict"):
        load_run(run_dir)


def test_checkpoint_of_another_model(run_dir):
    write_checkpoint(run_dir / "checkpoints" / "best.ckpt", {"model.other": torch.zeros(2)})
    with pytest.raises(ConfigError, match=r"best\.ckpt does not fit the model of .*config\.yaml"):
        load_run(run_dir)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ('{"exit": {"code": 3}}', {"exit": {"code": 3}}),
        ("[1, 2]", {}),
        ('{"exit": ', {}),
        ("\udcff", {}),
    ],
)
def test_run_info_reads_as_a_mapping_or_empty(tmp_path, text, expected):
    run = RunDir(tmp_path)
    if text is not None:
        run.run_info.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert run.read_run_info() == expected
