"""mtl-make-config --sweep: the expansion of a maker's sweep: section into a study folder."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import assert_bad_input, dataset

from compiler.build import compile_maker
from compiler.maker import json_schema
from compiler.sweep import expand_sweep

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def three(project, **sweep):
    """The standard project plus a third dataset c; the maker's sweep: is ``sweep``."""
    project.write("configs/datasets/c.yaml", dataset({"c": 2}, batch_size=4))
    return project.standard(
        dataset_cfgs=[
            "../configs/datasets/a.yaml",
            "../configs/datasets/b.yaml",
            "../configs/datasets/c.yaml",
        ],
        sweep=sweep,
    )


def manifest(folder):
    return yaml.safe_load((folder / "study.yaml").read_text())


def test_groups_grid_and_seeds_expand_deduplicated(project, cli):
    maker = three(
        project,
        all=True,
        pairs=True,
        leave_one_out=True,
        singles=True,
        groups=[["c", "a", "b"]],
        seeds=[0, 1, 1],
        set={"lr": [0.01, 0.1, 0.1], "trainer.max_epochs": [1]},
    )
    out = project.root / "studies" / "s"
    result = cli(maker, "--sweep", "-o", out)
    assert result.exit_code == 0, result.output
    doc = manifest(out)
    # all (== the explicit group) + 3 pairs (== the 3 leave-one-out groups) + 3 singles,
    # x 2 lr x 1 max_epochs x 2 seeds: every identical combination once
    assert len(doc["runs"]) == 7 * 2 * 2
    assert "wrote" in result.stderr
    assert "28 run configs" in result.stderr
    kinds = {tuple(r["group"]): r["kinds"] for r in doc["runs"]}
    assert kinds[("a", "b", "c")] == ["all", "group"]
    assert kinds[("a", "b")] == ["leave_one_out", "pair"]
    assert kinds[("c",)] == ["single"]
    names = [r["name"] for r in doc["runs"]]
    assert len(set(names)) == len(names)
    assert all(SAFE.fullmatch(n) for n in names)
    assert "all__lr=0.01__max_epochs=1__seed0" in names
    assert "a+b__lr=0.1__max_epochs=1__seed1" in names
    assert "c__lr=0.01__max_epochs=1__seed1" in names
    for run in doc["runs"]:
        assert run["config"] == f"configs/{run['name']}.yaml"
        assert run["run_dir"] == f"runs/{run['name']}"
        config = yaml.safe_load((out / run["config"]).read_text())
        assert config["seed_everything"] == run["seed"]
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == run["set"]["lr"]
        assert config["trainer"]["max_epochs"] == 1
        assert list(config["data"]["init_args"]["data_modules"]) == run["group"]
    assert sorted(p.name for p in (out / "configs").iterdir()) == sorted(f"{n}.yaml" for n in names)


def test_singles_compile_exactly_as_single_task(project, cli):
    maker = three(project, singles=True, pairs=True)
    project.write(
        "makers/maker.yaml",
        {
            **yaml.safe_load(maker.read_text()),
            "global_overrides": {
                "data": {"init_args": {"batch_sizes": {"a": 3, "b": 4, "c": 5}}},
                "model": {"init_args": {"tasks": {"a": {"init_args": {"weight": 2.0}}}}},
            },
        },
    )
    out = project.root / "study"
    result = cli(maker, "--sweep", "-o", out)
    assert result.exit_code == 0, result.output
    for name in ("a", "b", "c"):
        single = compile_maker(maker, single="abc".index(name)).run
        assert yaml.safe_load((out / "configs" / f"{name}.yaml").read_text()) == single
    pair = yaml.safe_load((out / "configs" / "b+c.yaml").read_text())
    assert pair["data"]["init_args"]["batch_sizes"] == {"b": 4, "c": 5}
    assert "a" not in pair["model"]["init_args"]["tasks"]
    assert "dropped" in result.stderr


def test_recompiling_is_deterministic_and_keeps_runs(project, cli):
    maker = three(project, pairs=True, seeds=[3])
    first, second = project.root / "one", project.root / "two"
    assert cli(maker, "--sweep", "-o", first).exit_code == 0
    assert cli(maker, "--sweep", "-o", second).exit_code == 0
    one, two = manifest(first), manifest(second)
    assert one["runs"] == two["runs"]
    for run in one["runs"]:
        assert (first / run["config"]).read_text() == (second / run["config"]).read_text()
    (first / "runs" / "a+b__seed3").mkdir(parents=True)
    (first / "runs" / "a+b__seed3" / "summary.json").write_text("{}")
    three(project, pairs=True, seeds=[3, 4])
    assert cli(maker, "--sweep", "-o", first).exit_code == 0
    assert (first / "runs" / "a+b__seed3" / "summary.json").exists()
    assert len(manifest(first)["runs"]) == 6


def test_names_stay_readable_and_unique_for_class_paths_and_mappings(project):
    maker = three(
        project,
        singles=True,
        set={
            "model.init_args.optimizer": [
                {"class_path": "torch.optim.SGD"},
                {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.1}},
                {"class_path": "torch.optim.AdamW"},
            ]
        },
    )
    study = expand_sweep(maker, project.root / "s")
    names = [r.name for r in study.runs]
    assert len(set(names)) == len(names) == 9
    assert "a__optimizer=SGD" in names
    assert all(SAFE.fullmatch(n) and len(n) <= 120 for n in names)


def test_one_bad_combination_writes_nothing(project, cli):
    # only groups with dataset a fail: batch_sizes.a is a number there
    maker = three(project, singles=True, set={"data.init_args.batch_sizes.a.x": [1]})
    out = project.root / "studies" / "bad"
    result = cli(maker, "--sweep", "-o", out)
    assert_bad_input(
        result,
        f"{maker}:",
        "sweep combination group [a] (single)",
        "data.init_args.batch_sizes.a.x=1",
        "cannot set",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("sweep", "needles"),
    [
        ({"groups": [["a", "bb"]]}, ["unknown dataset 'bb'", "did you mean 'b'"]),
        ({"set": {"lr": []}}, ["'lr' must be a non-empty list", "empty grid"]),
        ({"set": {"lrr": [0.1]}}, ["unknown substitution 'lrr'", "did you mean 'lr'"]),
        (
            {"set": {"trainer.max_epoch": [1]}},
            ["unknown key 'trainer.max_epoch'", "did you mean 'max_epochs'"],
        ),
        ({"pair": True}, ["unknown sweep key 'pair'", "did you mean 'pairs'"]),
        ({"seeds": [0, "one"]}, ["'seeds' must be a non-empty list"]),
        ({"singles": "yes"}, ["'singles' must be true or false"]),
        ({"groups": [["a", "a"]]}, ["dataset 'a' is twice"]),
    ],
)
def test_bad_axes_are_located_errors(project, cli, sweep, needles):
    maker = three(project, **sweep)
    out = project.root / "s"
    result = cli(maker, "--sweep", "-o", out)
    line = next(
        i for i, text in enumerate(maker.read_text().splitlines(), 1) if text.startswith("sweep:")
    )
    assert_bad_input(result, str(maker), *needles)
    assert re.search(rf"{re.escape(str(maker))}:(\d+)", result.output)
    assert int(re.search(rf"{re.escape(str(maker))}:(\d+)", result.output)[1]) > line - 1
    assert not out.exists()


def test_usage_errors(project, cli):
    maker = project.standard()
    assert_bad_input(cli(maker, "--sweep", "-o", project.root / "s"), "no 'sweep:' section")
    result = cli(three(project, pairs=True), "--sweep", "--print")
    assert result.exit_code == 2
    assert "cannot be combined" in result.output
    (project.root / "full").mkdir()
    (project.root / "full" / "keep.txt").write_text("x")
    assert_bad_input(cli(maker, "--sweep", "-o", project.root / "full"), "holds no study.yaml")
    assert "sweep" in json_schema()["properties"]
