"""mtl-ckpt-convert: DCP / safetensors / torch exports, config.json rebuilds, encoders'
``init_checkpoint``, adapter merging, and exit-2 errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from helpers import assert_bad_input
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from runtime_toy import toy_config
from torch import Tensor, nn
from toy_run_dir import train_toy_run

from runtime.config_errors import ConfigError
from runtime.encoders import MLPEncoder
from runtime.exported import build_exported
from runtime.init_checkpoint import load_init_checkpoint
from runtime.rundir import load_run
from scripts.ckpt_convert import main

FORMATS = ["dcp", "safetensors", "torch"]


class LoraMLP(nn.Module):
    """An MLP encoder with a peft LoRA on its first layer, as a peft wrapper (PeftModel) or
    injected tuner layers; random LoRA B so merging changes the base weights."""

    def __init__(self, in_features: int, hidden: int, style: str = "wrapper") -> None:
        super().__init__()
        torch.manual_seed(1)
        lora = LoraConfig(r=2, target_modules=["net.0"], init_lora_weights=False)
        base = MLPEncoder(in_features, [hidden])
        if style == "wrapper":
            self.body: nn.Module = get_peft_model(base, lora)
        else:
            self.body = inject_adapter_in_model(lora, base)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.body(inputs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_toy_run(tmp_path_factory.mktemp("ckpt"), toy_config(max_epochs=1))


def convert(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_init_checkpoint_says_what_it_loaded(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "enc"
    assert convert(run_dir, "--to", "safetensors", "-o", out).exit_code == 0
    capsys.readouterr()
    MLPEncoder(8, [16], init_checkpoint=str(out))
    err = capsys.readouterr().err
    assert re.search(
        rf"init_checkpoint {re.escape(str(out))}: loaded \d+ tensors "
        r"\([\d,]+ values\) into MLPEncoder",
        err,
    ), err
    monkeypatch.setenv("LOCAL_RANK", "1")  # other ranks of a launch stay quiet
    MLPEncoder(8, [16], init_checkpoint=str(out))
    assert capsys.readouterr().err == ""


def test_encoder_export_rebuilds_and_starts_a_new_run_with_identical_outputs(run_dir, tmp_path):
    run = load_run(run_dir, "best", with_data=False)
    encoder = run.module.model.encoder
    x = torch.randn(6, 8)
    expected = encoder(x)
    for fmt in FORMATS:
        out = tmp_path / fmt
        result = convert(run_dir, "--to", fmt, "-o", out)
        assert result.exit_code == 0, result.output
        config = json.loads((out / "config.json").read_text())
        assert config["part"] == "encoder"
        assert config["format"] == fmt
        assert config["encoder"][0]["class_path"] == "runtime.encoders.MLPEncoder"
        assert list(config["tensors"]) == list(encoder.state_dict())
        assert next(iter(config["tensors"])) == "0.net.0.weight"
        assert config["source"]["checkpoint"].endswith("best.ckpt")
        assert torch.equal(build_exported(out)(x), expected)
        weights = out / config["weights"]
        assert weights.is_dir() if fmt == "dcp" else weights.suffix in (".safetensors", ".pt")

        fresh = MLPEncoder(8, [16], init_checkpoint=str(out)).eval()
        assert torch.equal(fresh(x), expected)
        assert torch.equal(MLPEncoder(8, [16], init_checkpoint=str(weights)).eval()(x), expected)

    new_run = toy_config()
    new_run["model"]["init_args"]["model"]["init_args"]["encoder"][0]["init_args"][
        "init_checkpoint"
    ] = str(tmp_path / "safetensors")
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new_run))
    started = load_run(tmp_path / "new.yaml", ckpt=None, with_data=False).module.model.encoder
    assert torch.equal(started.eval()(x), expected)


def test_model_export_keeps_every_task_output(run_dir, tmp_path):
    run = load_run(run_dir, "last", with_data=False)
    out = tmp_path / "model"
    result = convert(run_dir, "--to", "dcp", "--part", "model", "--ckpt", "last", "-o", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["class_path"] == "runtime.model.MultiTaskModel"
    assert set(config["tasks"]) == {"ta", "tb"}
    assert "encoder.0.net.0.weight" in config["tensors"]
    rebuilt = build_exported(out)
    x = torch.randn(4, 8)
    expected = run.module.model(x)
    got = rebuilt(x)
    assert set(got) == {"ta", "tb"}
    assert all(torch.equal(got[t], expected[t]) for t in expected)
    # the encoder of a model export is found under its prefix
    fresh = MLPEncoder(8, [16], init_checkpoint=str(out)).eval()
    assert torch.equal(fresh(x), run.module.model.encoder(x))


def test_init_checkpoint_errors_name_the_file_and_the_mismatch(run_dir, tmp_path):
    out = tmp_path / "enc"
    assert convert(run_dir, "--to", "safetensors", "-o", out).exit_code == 0
    shape = r"2 tensor\(s\) of another shape.*0\.net\.0\.bias is \[16\] in the file but \[32\]"
    with pytest.raises(ValueError, match=shape):
        MLPEncoder(8, [32], init_checkpoint=str(out))
    with pytest.raises(ValueError, match=r"missing 2 tensors \(net\.1\.bias, net\.1\.weight\)"):
        MLPEncoder(8, [16], layer_norm=True, init_checkpoint=str(out))
    with pytest.raises(ValueError, match="does not exist"):
        load_init_checkpoint(nn.Linear(2, 2), tmp_path / "nothing.pt")
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(ValueError, match="Lightning checkpoint; convert it first"):
        load_init_checkpoint(nn.Linear(2, 2), tmp_path / "lightning.ckpt")
    # inside a run config it is a one-paragraph config error naming the file
    bad = toy_config()
    bad["model"]["init_args"]["model"]["init_args"]["encoder"][0]["init_args"].update(
        hidden_sizes=[32], init_checkpoint=str(out)
    )
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=f"{out}.*another shape"):
        load_run(tmp_path / "bad.yaml", ckpt=None, with_data=False)


def test_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path):
    out = tmp_path / "out"
    assert_bad_input(
        convert(tmp_path / "missing", "--to", "dcp", "-o", out), "no such run directory"
    )
    assert_bad_input(
        convert(run_dir, "--to", "dcp", "--ckpt", tmp_path / "x.ckpt", "-o", out),
        "x.ckpt does not exist",
    )
    assert_bad_input(convert(run_dir, "--to", "onnx", "-o", out), "'onnx' is not one of")
    assert_bad_input(
        convert(run_dir, "--to", "dcp", "--part", "trunk", "-o", out), "'trunk' is not one of"
    )
    assert not out.exists()
    out.mkdir()
    (out / "keep").write_text("old")
    assert_bad_input(convert(run_dir, "--to", "torch", "-o", out), "already exists", "--force")
    assert (out / "keep").read_text() == "old"
    result = convert(run_dir, "--to", "torch", "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "encoder.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


@pytest.mark.parametrize("style", ["wrapper", "inject"])
def test_merge_adapters_folds_peft_lora_into_the_base_weights(tmp_path, style):
    config = toy_config(
        max_epochs=1,
        encoder={
            "class_path": "test_ckpt_convert.LoraMLP",
            "init_args": {"in_features": 8, "hidden": 16, "style": style},
        },
    )
    run_dir = train_toy_run(tmp_path, config)
    encoder = load_run(run_dir, "best", with_data=False).module.model.encoder
    x = torch.randn(5, 8)
    expected = encoder(x)

    as_is = convert(run_dir, "--to", "safetensors", "-o", tmp_path / "as_is")
    assert as_is.exit_code == 0
    assert "exported as they are" in as_is.output
    names = json.loads((tmp_path / "as_is/config.json").read_text())["tensors"]
    assert any("lora_A" in n for n in names)

    merged = convert(run_dir, "--to", "safetensors", "--merge-adapters", "-o", tmp_path / "m")
    assert merged.exit_code == 0
    assert "folded 1 adapter" in merged.output
    config = json.loads((tmp_path / "m/config.json").read_text())
    assert config["adapters"] == {"present": 1, "merged": True}
    assert not any("lora" in n for n in config["tensors"])
    assert "0.body.net.0.weight" in config["tensors"]
    assert torch.allclose(build_exported(tmp_path / "m")(x), expected, atol=1e-5)
    base = MLPEncoder(8, [16]).eval()
    load_init_checkpoint(base, tmp_path / "m")  # the merged backbone starts a plain encoder
    assert torch.allclose(base(x), expected, atol=1e-5)


def test_merge_adapters_without_adapters_is_a_noop_with_a_note(run_dir, tmp_path):
    result = convert(run_dir, "--to", "torch", "--merge-adapters", "-o", tmp_path / "o")
    assert result.exit_code == 0
    assert "no mergeable adapters; nothing merged" in result.output
    config = json.loads((tmp_path / "o/config.json").read_text())
    assert config["adapters"] == {"present": 0, "merged": False}


def test_runtime_static_lora_exports_as_is_or_merged_and_rebuilds(tmp_path):
    config = toy_config(max_epochs=1)
    config["model"]["init_args"]["model"]["init_args"]["static_lora"] = {
        "class_path": "runtime.lora.StaticLoRA",
        "init_args": {"target_modules": ["0.net.0"], "rank": 2},
    }
    run_dir = train_toy_run(tmp_path, config)
    model = load_run(run_dir, "best", with_data=False).module.model
    x = torch.randn(5, 8)
    expected = model.encoder(x)
    lora_b = model.encoder.get_submodule("0.net.0").lora_B["default"].weight
    assert lora_b.abs().sum() > 0  # trained away from peft's zero init: merging matters

    for merge in ([], ["--merge-adapters"]):
        out = tmp_path / f"export{len(merge)}"
        result = convert(run_dir, "--to", "dcp", *merge, "-o", out)
        assert result.exit_code == 0, result.output
        config_json = json.loads((out / "config.json").read_text())
        assert config_json["static_lora"]["class_path"] == "runtime.lora.StaticLoRA"
        names = set(config_json["tensors"])
        assert ("0.net.0.weight" in names) == bool(merge)
        assert ("0.net.0.lora_A.default.weight" in names) != bool(merge)
        assert torch.allclose(build_exported(out)(x), expected, atol=1e-5)
