"""Every malformed input: exit 2, the file (and line) named, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers import assert_bad_input, dataset

BOMB = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)


def check(cli, project, maker, *needles, out_name="run.yaml"):
    out = project.root / out_name
    result = cli(maker, "-o", out)
    assert_bad_input(result, *needles)
    assert not out.exists(), "nothing may be written on failure"
    assert not list(project.root.glob("**/*.tmp"))
    return result


def test_yaml_syntax_error_names_file_and_line(cli, project):
    project.standard()
    project.write("configs/datasets/a.yaml", "model:\n  init_args: [unclosed\ndata: {}\n")
    check(cli, project, project.standard(), "configs/datasets/a.yaml:", "invalid YAML")


def test_missing_files(cli, project):
    check(cli, project, project.root / "nope.yaml", "nope.yaml", "not found")
    maker = project.standard(dataset_cfgs=["../configs/datasets/missing.yaml"])
    check(cli, project, maker, "configs/datasets/missing.yaml", "dataset config not found")
    maker = project.standard(base_path="../nothing.yaml")
    check(cli, project, maker, "nothing.yaml", "base config not found")


def test_maker_not_a_mapping(cli, project):
    check(cli, project, project.write("m.yaml", "- a\n- b\n"), "m.yaml", "must be a mapping")


def test_unknown_maker_key_did_you_mean(cli, project):
    maker = project.standard(dataset_cfg=["x"])
    line = maker.read_text().splitlines().index("dataset_cfg:") + 1
    check(
        cli,
        project,
        maker,
        f"maker.yaml:{line}: at 'dataset_cfg': unknown maker key 'dataset_cfg'",
        "did you mean 'dataset_cfgs'",
    )


@pytest.mark.parametrize(
    ("maker", "needle"),
    [
        ({"dataset_cfgs": []}, "'dataset_cfgs' is empty"),
        ({"dataset_cfgs": "a.yaml"}, "must be a list"),
        ({"dataset_cfgs": [3]}, "must be a path"),
        ({"substitutions": [1, 2]}, "must be a mapping"),
        ({"merge_options": {"merge_heads": "yes please"}}, "must be true or false"),
        ({"merge_options": {"merge_head": True}}, "did you mean 'merge_heads'"),
        ({"merge_options": {"same_label_groups": ["a"]}}, "must be a list of task names"),
        ({"base_cfg": "x.yaml"}, "not both"),
    ],
)
def test_wrong_types(cli, project, maker, needle):
    check(cli, project, project.standard(**maker), "maker.yaml:", needle)


def test_append_to_non_list(cli, project):
    maker = project.standard(global_overrides={"trainer": {"max_epochs+": [1]}})
    check(cli, project, maker, "maker.yaml:", "max_epochs+", "not a list")


def test_unresolved_placeholders_are_all_listed(cli, project):
    project.standard()
    doc = dataset({"a": 3})
    doc["data"]["init_args"]["x"] = "${missing_one}"
    doc["data"]["init_args"]["y"] = "prefix-${missing_two}"
    project.write("configs/datasets/a.yaml", doc)
    result = check(
        cli,
        project,
        project.standard(substitutions={"lr": 1}),
        "${missing_one}",
        "${missing_two}",
        "${hidden}",
    )
    assert "configs/datasets/a.yaml:" in result.output
    assert "configs/base.yaml:" in result.output


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("${hidden // 0}", "division by zero"),
        ("${hidden ** 2}", "only names, numbers"),
        ("${(hidden}", "not a valid expression"),
    ],
)
def test_bad_expressions(cli, project, expr, needle):
    project.standard()
    doc = dataset({"a": 3})
    doc["data"]["init_args"]["x"] = expr
    project.write("configs/datasets/a.yaml", doc)
    check(cli, project, project.standard(), "configs/datasets/a.yaml:", needle)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("- just\n- a list\n", "must be a mapping"),
        ({"model": {}, "data": {"class_path": "x"}}, "declares no task"),
        (
            {"model": {"init_args": {"model": {"init_args": {"decoders": {"t": []}}}}}},
            "non-empty list",
        ),
        (
            {"model": {"init_args": {"model": {"init_args": {"decoders": {"t": [{"a": 1}]}}}}}},
            "no 'data'",
        ),
    ],
)
def test_bad_dataset_configs(cli, project, content, needle):
    project.standard()
    project.write("configs/datasets/a.yaml", content)
    check(cli, project, project.standard(), "configs/datasets/a.yaml", needle)


def test_task_and_dataset_name_collisions_name_both_files(cli, project):
    project.standard()
    project.write("configs/datasets/c.yaml", dataset({"a": 3}))
    maker = project.standard(
        dataset_cfgs=["../configs/datasets/a.yaml", "../configs/datasets/c.yaml"]
    )
    check(cli, project, maker, "task 'a'", "datasets/a.yaml", "datasets/c.yaml")
    project.write("configs/datasets/d.yaml", dataset({"d": 3}, name="a"))
    maker = project.standard(
        dataset_cfgs=["../configs/datasets/a.yaml", "../configs/datasets/d.yaml"]
    )
    check(cli, project, maker, "dataset name 'a'", "datasets/a.yaml", "datasets/d.yaml")


def test_label_group_problem_via_cli(cli, project):
    maker = project.standard(
        merge_options={
            "merge_heads": True,
            "merge_task_labels": True,
            "same_label_groups": [["a", "ghost"]],
        }
    )
    check(cli, project, maker, "maker.yaml:", "ghost")


def test_non_text_files(cli, project):
    project.standard()
    (project.root / "configs/datasets/a.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    check(cli, project, project.standard(), "configs/datasets/a.yaml", "not a text file")
    (project.root / "configs/datasets/a.yaml").write_bytes(b"name: caf\xe9\n")
    check(cli, project, project.standard(), "configs/datasets/a.yaml", "not UTF-8")


def test_python_tags_are_refused(cli, project):
    project.standard()
    project.write("configs/base.yaml", "model: !!python/object/apply:os.system ['echo pwned']\n")
    check(cli, project, project.standard(), "configs/base.yaml:1", "not allowed")


def test_alias_bomb_is_refused_quickly(cli, project):
    project.standard()
    project.write("configs/base.yaml", BOMB)
    start = time.perf_counter()
    check(cli, project, project.standard(), "configs/base.yaml", "alias bomb")
    assert time.perf_counter() - start < 5


def test_output_directory_and_existing_output_kept(cli, project):
    maker = project.standard()
    (project.root / "outdir").mkdir()
    assert_bad_input(cli(maker, "-o", project.root / "outdir"), "outdir", "is a directory")
    out = project.root / "kept.yaml"
    out.write_text("previous content\n")
    bad = project.standard(dataset_cfgs=["../configs/datasets/missing.yaml"])
    assert_bad_input(cli(bad, "-o", out), "missing.yaml")
    assert out.read_text() == "previous content\n"


def test_refuses_to_overwrite_an_input(cli, project):
    maker = project.standard()
    before = maker.read_text()
    assert_bad_input(cli(maker, "-o", maker), "one of the inputs")
    assert maker.read_text() == before


def test_real_process_exit_code_and_no_traceback(project):
    result = subprocess.run(
        [sys.executable, "-m", "compiler", str(project.root / "absent.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr
