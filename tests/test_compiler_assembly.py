"""Native assembly: placement, overrides, label merging, output, --set, --explain."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from helpers import BASE, dataset

from compiler.build import compile_maker
from compiler.errors import ConfigError

DEC = ("model", "init_args", "model", "init_args")


def run_of(path, **kw):
    return compile_maker(path, **kw).run


def decoders(run):
    return run["model"]["init_args"]["model"]["init_args"]["decoders"]


def test_assembly_places_every_piece(project):
    run = run_of(project.standard())
    assert list(decoders(run)) == ["a", "b1", "b2"]
    assert decoders(run)["a"][0]["init_args"] == {"in_features": 32, "num_outputs": 3}
    assert set(run["model"]["init_args"]["tasks"]) == {"a", "b1", "b2"}
    data = run["data"]["init_args"]
    assert list(data["data_modules"]) == ["a", "b"]  # dataset names from file names
    assert data["batch_sizes"] == {"a": 16, "b": 8}
    assert "batch_size" not in data["data_modules"]["a"]["init_args"]
    assert data["dataset_tasks"] == {"a": ["a"], "b": ["b1", "b2"]}
    # values that are not compiler paths pass through as written
    assert data["data_modules"]["a"]["init_args"]["path"] == "relative/data/stays.csv"
    # everything else comes from the base, substituted with the value's type
    assert run["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.01
    assert run["trainer"] == BASE["trainer"]


def test_dataset_name_from_config_and_list_entries_merge_in_order(project):
    project.standard()
    project.write(
        "configs/datasets/a_extra.yaml",
        {"name": "alpha", "data": {"init_args": {"batch_size": 99, "extra": 1}}},
    )
    maker = project.standard(
        dataset_cfgs=[
            ["../configs/datasets/a.yaml", "../configs/datasets/a_extra.yaml"],
            "../configs/datasets/b.yaml",
        ]
    )
    run = run_of(maker)
    data = run["data"]["init_args"]
    assert data["batch_sizes"] == {"alpha": 99, "b": 8}
    assert data["data_modules"]["alpha"]["init_args"]["extra"] == 1
    assert data["data_modules"]["alpha"]["init_args"]["dataset"] == "digits"


def test_local_overrides_reach_each_dataset_and_global_wins(project):
    maker = project.standard(
        local_overrides={"data": {"init_args": {"batch_size": 4, "num_workers": 2}}},
        global_overrides={
            "data": {"init_args": {"batch_sizes": {"b": 64}}},
            "trainer": {"callbacks+": [{"class_path": "cb.B"}], "~max_epochs": None},
        },
    )
    run = run_of(maker)
    data = run["data"]["init_args"]
    assert data["batch_sizes"] == {"a": 4, "b": 64}
    assert all(m["init_args"]["num_workers"] == 2 for m in data["data_modules"].values())
    assert run["trainer"] == {"callbacks": [{"class_path": "cb.A"}, {"class_path": "cb.B"}]}


def test_paths_resolve_against_the_naming_file_not_cwd(project, monkeypatch, tmp_path):
    maker = project.standard()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert "a" in decoders(run_of(maker))


def test_label_merging_sorted_layout_and_groups(project):
    project.standard()
    project.write("configs/datasets/c.yaml", dataset({"c": 2}, head="runtime.heads.Other"))
    maker = project.standard(
        dataset_cfgs=[
            "../configs/datasets/b.yaml",
            "../configs/datasets/a.yaml",
            "../configs/datasets/c.yaml",
        ],
        merge_options={
            "merge_heads": True,
            "merge_task_labels": True,
            "same_label_groups": [["b2", "b1"]],
        },
    )
    args = run_of(maker)["model"]["init_args"]["model"]["init_args"]
    assert list(args["decoders"]) == ["Cls", "Other"]
    assert args["decoders"]["Cls"][0]["init_args"]["num_outputs"] == 5  # a:3 + {b1,b2}:2
    assert args["decoders"]["Other"][0]["init_args"]["num_outputs"] == 2
    assert args["decoder_to_target"] == {"Cls": ["a", "b1", "b2"], "Other": ["c"]}
    assert args["task_label_offsets"] == {
        "a": {"offset": 0, "num_outputs": 3},
        "b1": {"offset": 3, "num_outputs": 2},
        "b2": {"offset": 3, "num_outputs": 2},
        "c": {"offset": 0, "num_outputs": 2},
    }


def test_offsets_do_not_depend_on_file_order(project):
    opts = {"merge_heads": True, "merge_task_labels": True}
    one = project.standard(merge_options=opts)
    first = run_of(one)["model"]["init_args"]["model"]["init_args"]["task_label_offsets"]
    two = project.standard(
        merge_options=opts,
        dataset_cfgs=["../configs/datasets/b.yaml", "../configs/datasets/a.yaml"],
    )
    second = run_of(two)["model"]["init_args"]["model"]["init_args"]["task_label_offsets"]
    assert first == second


def test_merge_heads_without_label_merge_shares_equal_counts(project):
    project.standard()
    maker = project.standard(
        dataset_cfgs=["../configs/datasets/b.yaml"], merge_options={"merge_heads": True}
    )
    args = run_of(maker)["model"]["init_args"]["model"]["init_args"]
    assert args["decoders"]["Cls"][0]["init_args"]["num_outputs"] == 2
    assert args["task_label_offsets"] == {
        "b1": {"offset": 0, "num_outputs": 2},
        "b2": {"offset": 0, "num_outputs": 2},
    }
    with pytest.raises(ConfigError, match="equal output counts"):
        run_of(project.standard(merge_options={"merge_heads": True}))


def test_merging_refuses_decoders_that_differ_beyond_num_outputs(project):
    project.standard()
    other = dataset({"a": 3})
    other["model"]["init_args"]["model"]["init_args"]["decoders"]["a"][0]["init_args"][
        "dropout"
    ] = 0.5
    project.write("configs/datasets/a.yaml", other)
    with pytest.raises(ConfigError, match=r"differ at '0\.init_args\.dropout'"):
        run_of(project.standard(merge_options={"merge_heads": True, "merge_task_labels": True}))


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["a", "nope"]], "names task 'nope'"),
        ([["a", "b1"]], "same output count"),
        ([["b1", "b2"], ["b2"]], "in two label groups"),
    ],
)
def test_label_group_errors(project, groups, message):
    maker = project.standard(
        merge_options={"merge_heads": True, "merge_task_labels": True, "same_label_groups": groups}
    )
    with pytest.raises(ConfigError, match=message) as err:
        run_of(maker)
    assert err.value.file.endswith("maker.yaml")
    assert err.value.line is not None


def test_output_is_deterministic_standalone_with_header(project, cli, tmp_path):
    maker = project.standard(merge_options={"merge_heads": True, "merge_task_labels": True})
    out = tmp_path / "out" / "run.yaml"
    assert cli(maker, "-o", out, "-q").exit_code == 0
    first = out.read_bytes()
    assert cli(maker, "-o", out, "-q").exit_code == 0
    assert out.read_bytes() == first
    text = first.decode()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0].startswith("# Generated by mtl-make-config")
    assert "# maker: ../makers/maker.yaml" in header
    hashes = [line.split()[2:] for line in header if line.startswith("# sha256")]
    assert [h[1] for h in hashes] == [
        "../makers/maker.yaml",
        "../configs/base.yaml",
        "../configs/datasets/a.yaml",
        "../configs/datasets/b.yaml",
    ]
    # standalone: the parsed run config is the same with every input gone
    parsed = yaml.safe_load(text)
    shutil.rmtree(project.root / "configs")
    assert yaml.safe_load(out.read_text()) == parsed
    assert "${" not in text


def test_default_and_maker_output_paths(project, cli):
    maker = project.standard()
    assert cli(maker, "-q").exit_code == 0
    assert (maker.parent / "maker.run.yaml").is_file()
    maker = project.standard(output_path="../out/named.yaml")
    assert cli(maker, "-q").exit_code == 0
    assert (project.root / "out" / "named.yaml").is_file()


def test_set_overrides_substitutions_and_keys(project):
    maker = project.standard()
    run = run_of(
        maker,
        sets=[
            "lr=0.5",
            "trainer.max_epochs=7",
            "trainer.callbacks.0.init_args.x=[1, 2]",
            "data.init_args.new=yes",
        ],
    )
    assert run["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.5
    assert run["trainer"]["max_epochs"] == 7
    assert run["trainer"]["callbacks"][0]["init_args"]["x"] == [1, 2]
    assert run["data"]["init_args"]["new"] is True
    with pytest.raises(ConfigError, match="list of 1 items"):
        run_of(maker, sets=["trainer.callbacks.3.x=1"])
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        run_of(maker, sets=["novalue"])


def test_print_schema_and_dialect_message(project, cli):
    maker = project.standard()
    result = cli(maker, "--print")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["trainer"]["max_epochs"] == 2
    assert "dialect native" in result.stderr
    assert not (maker.parent / "maker.run.yaml").exists()
    schema = json.loads(cli("--schema").stdout)
    assert schema["additionalProperties"] is False
    assert {"base_path", "dataset_cfgs", "merge_options"} <= set(schema["properties"])


def test_explain_chain(project, cli):
    maker = project.standard(global_overrides={"trainer": {"max_epochs": 9}})
    result = cli(
        maker,
        "--explain",
        "trainer.max_epochs",
        "--explain",
        "model.init_args.optimizer.init_args.lr",
        "--explain",
        "data.init_args.batch_sizes.b",
        "--set",
        "trainer.max_epochs=11",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "trainer.max_epochs = 11" in out
    assert "configs/base.yaml:" in out
    assert "makers/maker.yaml:" in out
    assert "--set" in out
    lines = out.splitlines()
    lr = lines.index("model.init_args.optimizer.init_args.lr = 0.01")
    assert "configs/base.yaml:" in lines[lr + 1]
    assert "(from ${lr}: lr <- " in lines[lr + 1]
    assert "maker.yaml:" in lines[lr + 1]
    assert "configs/datasets/b.yaml:" in out


def test_warns_about_ignored_dataset_keys(project):
    project.standard()
    doc = dataset({"a": 3})
    doc["trainer"] = {"max_epochs": 100}
    doc["model"]["init_args"]["lr"] = 1.0
    project.write("configs/datasets/a.yaml", doc)
    compiled = compile_maker(project.standard())
    assert any("'trainer' is ignored" in w for w in compiled.warnings)
    assert any("model.init_args.lr" in w for w in compiled.warnings)
    assert compiled.run["trainer"]["max_epochs"] == 2


def test_single_task_baselines(project, cli):
    maker = project.standard(
        merge_options={
            "merge_heads": True,
            "merge_task_labels": True,
            "same_label_groups": [["b1", "b2"]],
        },
        global_overrides={
            "trainer": {"max_epochs": 5},
            "data": {"init_args": {"batch_sizes": {"a": 3, "b": 4}}},
            "model": {"init_args": {"tasks": {"a": {"init_args": {"weight": 2.0}}}}},
        },
    )
    out = project.root / "baselines"
    result = cli(maker, "--single-task", "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.yaml", "b.yaml"]
    a = yaml.safe_load((out / "a.yaml").read_text())
    b = yaml.safe_load((out / "b.yaml").read_text())
    assert a["trainer"]["max_epochs"] == b["trainer"]["max_epochs"] == 5
    assert a["data"]["init_args"]["batch_sizes"] == {"a": 3}
    assert b["data"]["init_args"]["batch_sizes"] == {"b": 4}
    assert set(b["model"]["init_args"]["tasks"]) == {"b1", "b2"}
    assert b["model"]["init_args"]["tasks"]["b1"]["init_args"] == {"weight": 1.0}
    args = b["model"]["init_args"]["model"]["init_args"]
    assert args["task_label_offsets"] == {
        "b1": {"offset": 0, "num_outputs": 2},
        "b2": {"offset": 0, "num_outputs": 2},
    }
    assert a["model"]["init_args"]["optimizer"] == b["model"]["init_args"]["optimizer"]
    assert "dropped" in result.stderr
    assert "tasks.a" in result.stderr
