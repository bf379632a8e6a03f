"""Hostile and unlucky input, class by class: exit 2 with a located paragraph, or exit 0 —
never a traceback, a hang, unbounded memory or a half-written output.

Each test covers one class of input (issue 11); several generate their cases.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import BASE, Project, assert_bad_input, dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.build import compile_maker
from compiler.cli import main
from compiler.errors import ConfigError
from compiler.yamlemit import emit
from compiler.yamlload import MAX_DEPTH, load

DEC = ("model", "init_args", "model", "init_args", "decoders")


def invoke(*args: Any, env: dict | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def refused(result, *needles: str) -> str:
    assert_bad_input(result, *needles)
    return result.output


def clean(result) -> None:
    """Exit 0 or a clean refusal (exit 2), never another exception."""
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 0:
        assert result.exception is None, repr(result.exception)
    else:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


# -- 1. merge keys and the line walk -------------------------------------------------------


def test_merge_keys_anywhere_do_not_break_lines_or_explain(cli, project):
    project.standard()
    base = (
        dump(BASE)
        .replace("trainer:\n", "defaults: &d {max_epochs: 5, x: 1}\ntrainer:\n  <<: *d\n", 1)
        .replace("  max_epochs: 2\n", "", 1)
    )
    project.write("configs/base.yaml", base)
    doc = dataset({"a": 3})
    text = dump(doc) + "common: &c {k: 1}\nother:\n  <<: [*c, {j: 2}]\n  z: !!str 3\n"
    project.write("configs/datasets/a.yaml", text)
    maker = project.standard()
    out = project.root / "run.yaml"
    ok = cli(maker, "-o", out, "--explain", "trainer.max_epochs", "--explain", "trainer.x")
    assert ok.exit_code == 0, ok.output
    assert "trainer.max_epochs = 5" in ok.output
    # an error that needs a line number, in a file using merge keys and tags
    bad = dump(doc).replace("num_outputs: 3", "num_outputs: {x: 1}") + text[len(dump(doc)) :]
    project.write("configs/datasets/a.yaml", bad)
    maker = project.standard(merge_options={"merge_heads": True, "merge_task_labels": True})
    refused(cli(maker, "-o", out), "configs/datasets/a.yaml:", "output count")


@pytest.mark.parametrize(
    "merge", ["x: [1]\n<<: 5\n", "<<: *nope\n", "a: 1\n<<: {a: 2}\n<<: {b: 3}\n"]
)
def test_bad_merge_keys_are_located(cli, project, merge):
    project.standard()
    project.write("configs/datasets/a.yaml", dump(dataset({"a": 3})) + merge)
    refused(cli(project.standard(), "-o", project.root / "o.yaml"), "configs/datasets/a.yaml:")


# -- 2 and 21. explicit tags ---------------------------------------------------------------

_PLAIN = "is not allowed: a config holds plain data only"
#: a tagged value -> what the refusal says about it
BAD_TAGS = {
    "!!int abc": "!!int 'abc' is not an integer",
    "!!float abc": "!!float 'abc' is not a number",
    "!!bool maybe": "!!bool 'maybe' is not true or false",
    "!!timestamp x": "!!timestamp 'x' is not a date or time",
    "!!int ''": "!!int '' is not an integer",
    "!!null x": "!!null 'x' is not null",
    "!!set {a, b}": "!!set is not allowed (its order would depend on the hash seed; use a list)",
    "!!binary aGk=": "!!binary is not allowed (a config holds text, not bytes)",
    "!!omap [{a: 1}]": "!!omap is not allowed (a mapping keeps its order already)",
    "!!pairs [{a: 1}]": "!!pairs is not allowed (use a list of mappings)",
    "!!python/tuple [1]": f"the tag !!python/tuple {_PLAIN}",
    "!!python/object/apply:os.system ['true']": (
        f"the tag !!python/object/apply:os.system {_PLAIN}"
    ),
    "!local x": f"the tag !local {_PLAIN}",
    "!!str [1]": f"the tag !!str {_PLAIN}",
    "!!map [1]": f"the tag !!map {_PLAIN}",
    "!!seq {a: 1}": f"the tag !!seq {_PLAIN}",
    "!<tag:example.com,2000:x> 1": f"the tag tag:example.com,2000:x {_PLAIN}",
}


@pytest.mark.parametrize("tagged", BAD_TAGS)
@pytest.mark.parametrize("where", ["maker", "base", "dataset"])
@pytest.mark.parametrize("as_key", [False, True])
def test_bad_or_non_plain_tags_are_located_errors(cli, project, tagged, where, as_key):
    maker = project.standard()
    line = f"? {tagged}\n: 1\n" if as_key else f"extra_{where}: {tagged}\n"
    if where == "maker":
        text = maker.read_text().replace("base_path:", line + "base_path:", 1)
        target = maker
    else:
        name = "configs/base.yaml" if where == "base" else "configs/datasets/a.yaml"
        target = project.root / name
        text = target.read_text() + line
    target.write_text(text)
    refused(cli(maker, "-o", project.root / "o.yaml"), f"{target.name}:", BAD_TAGS[tagged])


def test_set_refused_and_output_never_depends_on_hash_seed(project):
    maker = project.standard()
    project.write("configs/base.yaml", dump(BASE) + "s: !!set {b, a, c}\n")
    outs = set()
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "compiler", str(maker), "--print", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 2
        assert "!!set is not allowed" in result.stderr
        outs.add(result.stderr)
    assert len(outs) == 1


def test_valid_tags_still_read():
    doc = load(
        "a: !!int '7'\nb: !!float 1\nc: !!bool yes\nd: !!str 1\ne: !!null ''\n"
        "f: !!timestamp 2024-01-02\ng: ! 12\n",
        "x.yaml",
    )
    assert doc["a"] == 7
    assert doc["b"] == 1.0
    assert doc["c"] is True
    assert doc["d"] == "1"
    assert doc["e"] is None
    assert str(doc["f"]) == "2024-01-02"
    assert doc["g"] == "12"


# -- 20. duplicate keys --------------------------------------------------------------------


@given(
    st.lists(st.sampled_from(["a", "b", "c", "1", "'a'", '"b"']), min_size=2, max_size=6),
    st.integers(0, 2),
)
@settings(max_examples=60, deadline=None)
def test_duplicate_keys_name_both_lines(keys, nesting):
    indent = "  " * nesting
    body = "".join(f"{indent}{k}: {i}\n" for i, k in enumerate(keys))
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(nesting)) + body
    plain = [next(iter(yaml.safe_load(f"{k}: 0"))) for k in keys]
    first = {}
    dup = None
    for i, k in enumerate(plain):
        if k in first:
            dup = (first[k], i)
            break
        first[k] = i
    if dup is None:
        load(text, "d.yaml")
        return
    with pytest.raises(ConfigError) as info:
        load(text, "d.yaml")
    message = str(info.value)
    assert f"first at line {nesting + dup[0] + 1}" in message
    assert f"again at line {nesting + dup[1] + 1}" in message
    assert message.startswith(f"d.yaml:{nesting + dup[1] + 1}:")


def test_duplicate_keys_refused_in_every_input(cli, project):
    maker = project.standard()
    maker.write_text(maker.read_text() + "substitutions:\n  lr: 1\n")
    refused(
        cli(maker, "-o", project.root / "o.yaml"), "maker.yaml:", "duplicate key", "first at line"
    )


# -- 3 and 4. huge integers and arithmetic -------------------------------------------------


@pytest.mark.parametrize("digits", [4301, 10_000])
def test_huge_integers_anywhere(cli, project, digits):
    number = "7" * digits
    maker = project.standard()
    out = project.root / "o.yaml"
    project.write("configs/base.yaml", dump(BASE) + f"x: {number}\n")
    refused(cli(maker, "-o", out), "configs/base.yaml:", "4300 digits")
    project.write("configs/base.yaml", dump(BASE) + f"x: !!int 0x{'f' * digits}\n")
    refused(cli(maker, "-o", out), "configs/base.yaml:", "4300 digits")
    project.write("configs/base.yaml", BASE)
    refused(cli(maker, "-o", out, "--set", f"lr={number}"), "--set", "4300 digits")
    refused(cli(maker, "-o", out, "--set", f"trainer.x=[{number}]"), "--set", "4300 digits")
    maker.write_text(maker.read_text() + f"local_overrides: {{x: {number}}}\n")
    refused(cli(maker, "-o", out), "maker.yaml:", "4300 digits")


@pytest.mark.parametrize(
    ("value", "expr", "needle"),
    [
        (int("9" * 4000), "${big * big}", "more than 4300 digits"),
        (10**400, "${big / 3}", "too large"),
        (10**400, "${big * 1.5}", "too large"),
        (1e300, "${big * big}", "not a finite number"),
        (-(10**1000), "${big * big * big * big * big}", "more than 4300 digits"),
        (2, "${big * big * big * big * big * big * big * big * big * big * big * big}", None),
    ],
    ids=["square", "div", "float_mul", "float_inf", "chain", "small"],
)
def test_arithmetic_results_are_bounded(cli, project, value, expr, needle):
    project.write("configs/base.yaml", dump(BASE) + f"y: {expr}\n")
    maker = project.standard(substitutions={"hidden": 32, "lr": 0.1, "big": value})
    result = cli(maker, "-o", project.root / "o.yaml")
    if needle is None:
        assert result.exit_code == 0, result.output
    else:
        refused(result, "configs/base.yaml:", needle)


# -- 5, 6, 7. bytes that are not UTF-8, NUL, over-long names -------------------------------


def test_non_utf8_argv_and_file_names(project, tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xe9-\xff"
    os.makedirs(folder)  # noqa: PTH103 - a bytes path (not UTF-8); pathlib takes only str
    weird = Project(Path(os.fsdecode(folder)))
    maker = weird.standard()
    exe = [sys.executable, "-m", "compiler"]
    out = folder + b"/out\xfe.yaml"
    ok = subprocess.run([*exe, os.fsencode(maker), b"-o", out], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    text = Path(os.fsdecode(out)).read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    hashed = [line.split()[3] for line in header if line.startswith("# sha256 ")]
    # inputs are named relative to the output: the undecodable folder name is not in them
    assert hashed == [
        "makers/maker.yaml",
        "configs/base.yaml",
        "configs/datasets/a.yaml",
        "configs/datasets/b.yaml",
    ]
    assert not [line for line in header if "\\x" in line]
    assert yaml.safe_load(text)["model"]
    bad = subprocess.run(
        [*exe, os.fsencode(maker), b"-o", out, b"--set", b"lr=\xff"],
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert b"not valid UTF-8" in bad.stderr
    assert b"Traceback" not in bad.stderr
    explain = subprocess.run(
        [*exe, os.fsencode(maker), b"--explain", b"\xff.x"], capture_output=True, timeout=60
    )
    assert explain.returncode == 2
    assert b"Traceback" not in explain.stderr
    missing = subprocess.run([*exe, folder + b"/nope\xff.yaml"], capture_output=True, timeout=60)
    assert missing.returncode == 2
    assert b"\\xff" in missing.stderr


@pytest.mark.parametrize(
    "field", ["base_path", "output_path", "dataset", "dataset_list", "finetune"]
)
def test_nul_in_any_path(cli, project, field):
    fields: dict[str, Any] = {
        "base_path": {"base_path": "../configs/ba\0se.yaml"},
        "output_path": {"output_path": "o\0ut.yaml"},
        "dataset": {"dataset_cfgs": ["../configs/datasets/a\0.yaml"]},
        "dataset_list": {"dataset_cfgs": [["../configs/datasets/a.yaml", "x\0.yaml"]]},
        "finetune": {"finetune_from": {"run_dir": "../r\0un"}},
    }[field]
    refused(cli(project.standard(**fields)), "maker.yaml:", "NUL")


def test_nul_in_the_dataset_info_path(cli, rs_maker):
    maker, tmp = rs_maker
    base = tmp / "base/base.yaml"
    base.write_text(
        base.read_text().replace(
            "all_dataset_info_path: ../info/all.yaml",
            'all_dataset_info_path: "../info/a\\0ll.yaml"',
        )
    )
    refused(cli(maker, "--dialect", "rslearn"), "base.yaml:", "NUL")


def test_output_names_longer_than_the_file_system_allows(cli, project):
    maker = project.standard()
    for name in ("x" * 256 + ".yaml", "é" * 130 + ".yaml", "d" * 300 + "/run.yaml"):
        refused(cli(maker, "-o", project.root / name), "longer than" if "/" not in name else "")
        assert not list(project.root.glob("**/*.tmp"))
    near = project.root / ("y" * 250 + ".yaml")  # legal name: its temporary file must be too
    assert cli(maker, "-o", near).exit_code == 0
    assert near.is_file()


# -- 8. only regular files, within the size cap --------------------------------------------


@pytest.mark.parametrize("kind", ["dev_zero", "dev_urandom", "fifo", "dir", "socket"])
@pytest.mark.parametrize("role", ["maker", "base", "dataset"])
def test_only_regular_files_are_read(cli, project, tmp_path, kind, role):
    import socket

    path = {"dev_zero": Path("/dev/zero"), "dev_urandom": Path("/dev/urandom")}.get(kind)
    if path is None:
        path = tmp_path / f"special_{kind}.yaml"
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(path))
    if role == "maker":
        refused(cli(path), str(path))
        return
    field = {"base": {"base_path": str(path)}, "dataset": {"dataset_cfgs": [str(path)]}}[role]
    refused(cli(project.standard(**field), "-o", tmp_path / "o.yaml"), str(path))


def test_size_cap_option_and_env(cli, project, tmp_path):
    maker = project.standard()
    padding = "# " + "x" * 2000 + "\n"
    project.write("configs/base.yaml", dump(BASE) + padding * 600)  # ~1.2 MB
    out = tmp_path / "o.yaml"
    refused(
        cli(maker, "-o", out, "--max-file-size", "1M"),
        "configs/base.yaml",
        "size cap",
        "--max-file-size",
    )
    assert cli(maker, "-o", out, "--max-file-size", "2M").exit_code == 0
    refused(invoke(maker, "-o", out, env={"MTL_MAX_FILE_SIZE": "1048576"}), "size cap")
    assert invoke(maker, "-o", out, env={"MTL_MAX_FILE_SIZE": "2MiB"}).exit_code == 0
    for bad in ("0", "-1", "lots", "1X", ""):
        result = cli(maker, "--max-file-size", bad)
        assert result.exit_code == 2
        assert "Traceback" not in result.output


def test_output_over_the_cap_is_refused_and_not_written(cli, project, tmp_path):
    maker = project.standard(substitutions={"hidden": 32, "lr": 0.1, "s": "y" * 400_000})
    project.write("configs/base.yaml", {**BASE, "a": "${s}", "b": ["${s}"] * 3})
    out = tmp_path / "o.yaml"
    refused(cli(maker, "-o", out, "--max-file-size", "1M"), "size cap")
    assert not out.exists()
    assert cli(maker, "-o", out, "--max-file-size", "3M").exit_code == 0


# -- 12. the expansion guard cannot be bypassed --------------------------------------------


def _aliased_tree(levels: int, width: int = 10) -> str:
    """A YAML block whose aliases expand to width**levels strings (under the parse guard)."""
    lines = ["l0: &l0 [" + ",".join(["abcdefghijklmnop"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.parametrize("uses", [3, 53])
@pytest.mark.parametrize(
    "route", ["substitution", "set_name", "local_overrides", "global_overrides", "chained"]
)
def test_expansion_through_substitutions_and_overrides_is_bounded(cli, project, route, uses):
    """A ~1M-node aliased tree passes the parse guard; using it several times must not."""
    maker = project.standard()
    tree = "\n".join("    " + line for line in _aliased_tree(6).splitlines())
    out = project.root / "o.yaml"
    base = copy.deepcopy(BASE)
    args: list[str] = []
    refs = {f"x{i}": "${big}" for i in range(uses)}
    if route == "set_name":
        args = ["--set", "big=" + "{" + _aliased_tree(6).replace("\n", ", ") + "}"]
    else:
        maker.write_text(
            maker.read_text().replace(
                "substitutions:\n", "substitutions:\n  big:\n" + tree + "\n", 1
            )
        )
    if route in ("substitution", "set_name"):
        base["extra"] = refs
    elif route == "chained":
        maker.write_text(
            maker.read_text().replace(
                "substitutions:\n", "substitutions:\n  many: " + str(list(refs.values())) + "\n", 1
            )
        )
        base["extra"] = "${many}"
    else:
        maker.write_text(maker.read_text() + f"{route}:\n  data:\n    big: {refs}\n")
    project.write("configs/base.yaml", base)
    result = cli(maker, "-o", out, *args)
    refused(result, "size cap")
    assert not out.exists()


def test_classic_alias_bombs_in_every_input(cli, project):
    bomb = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
        for i in range(8)
    )
    maker = project.standard()
    refused(cli(maker, "--set", "x={" + bomb.replace("\n", ", ") + "}"), "alias bomb")
    maker.write_text(
        maker.read_text()
        + "local_overrides:\n"
        + "".join("  " + line + "\n" for line in bomb.splitlines())
    )
    refused(cli(maker), "maker.yaml", "alias bomb")


# -- 9, 10, 11. wrong shapes anywhere on the assembly path ---------------------------------

WRONG = [5, "x", [1], None, {}, {"k": 1}, {1: 2}, [[]], True, 1.5, [None], ""]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _native_files() -> dict[str, Any]:
    return {
        "configs/base.yaml": BASE,
        "configs/datasets/a.yaml": dataset({"a": 3}),
        "configs/datasets/b.yaml": dataset({"b1": 2, "b2": 2}, batch_size=8),
        "makers/maker.yaml": {
            "base_path": "../configs/base.yaml",
            "dataset_cfgs": ["../configs/datasets/a.yaml", "../configs/datasets/b.yaml"],
            "substitutions": {"hidden": 32, "lr": 0.01},
            "local_overrides": {"data": {"init_args": {"num_workers": 0}}},
            "global_overrides": {
                "trainer": {"max_epochs": 3},
                "data": {"init_args": {"batch_sizes": {"a": 4}}},
                "model": {
                    "init_args": {
                        "model": {
                            "init_args": {
                                "decoders": {
                                    "a": [
                                        {
                                            "class_path": "runtime.heads.Cls",
                                            "init_args": {"in_features": 32, "num_outputs": 3},
                                        }
                                    ]
                                }
                            }
                        }
                    }
                },
            },
            "merge_options": {
                "merge_heads": True,
                "merge_task_labels": True,
                "same_label_groups": [["b1", "b2"]],
            },
        },
    }


POOLING = "rslearn.models.pooling_decoder.PoolingDecoder"
HEAD = "rslearn.train.tasks.classification.ClassificationHead"


def _rslearn_files() -> dict[str, Any]:
    from test_rslearn_dialect import BASE as RS_BASE
    from test_rslearn_dialect import dataset_text

    files: dict[str, Any] = {
        "base/base.yaml": yaml.safe_load(
            RS_BASE.replace("INFO", "../info/all.yaml").replace("{PATCH_SIZE}", "8")
        ),
        "info/all.yaml": {
            t: {"num_outputs": 2, "num_outputs_key": "out_channels", "outputs_key": "class"}
            for t in ("t1", "t2")
        },
        "makers/maker.yaml": {
            "base_cfg": "../base/base.yaml",
            "dataset_cfgs": ["../datasets/t1.yaml", "../datasets/t2.yaml"],
            "substitutions": {
                "patch_size": 8,
                "encoder_embedding_size": 768,
                "helios_checkpoint_path": "/ckpt",
            },
            "global_overrides": {
                "model": {
                    "init_args": {
                        "model": {
                            "init_args": {
                                "decoders": {
                                    "t1": [
                                        {
                                            "class_path": POOLING,
                                            "init_args": {"in_channels": 768, "out_channels": 2},
                                        },
                                        {"class_path": HEAD},
                                    ]
                                }
                            }
                        }
                    }
                }
            },
            "merge_options": {
                "merge_heads": True,
                "merge_task_labels": True,
                "same_label_groups": [["t1", "t2"]],
            },
        },
    }
    for task in ("t1", "t2"):
        files[f"datasets/{task}.yaml"] = yaml.safe_load(
            dataset_text(task).replace("{ENCODER_EMBEDDING_SIZE}", "768")
        )
    return files


def _compile_mutated(
    files: dict[str, Any], name: str, path: tuple, value: Any, args: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = Project(Path(tmp))
        for file, doc in files.items():
            project.write(file, _replace(doc, path, value) if file == name else doc)
        maker = Path(tmp) / "makers/maker.yaml"
        out = ["-o", str(Path(tmp) / ("single" if "--single-task" in args else "o.yaml"))]
        result = invoke(maker, *out, *args)
        clean(result)
        if result.exit_code == 2:
            assert "error:" in result.output


NATIVE = _native_files()
NATIVE_CASES = [(name, path) for name, doc in NATIVE.items() for path in _paths(doc)]
OPTIONS = [
    [],
    ["--single-task"],
    ["--explain", "model.init_args"],
    ["--set", "trainer.max_epochs=1"],
]


@given(
    case=st.sampled_from(NATIVE_CASES),
    value=st.sampled_from(WRONG),
    options=st.sampled_from(OPTIONS),
)
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
def test_wrong_shapes_anywhere_native(case, value, options):
    name, path = case
    _compile_mutated(NATIVE, name, path, value, options)


@given(data=st.data(), value=st.sampled_from(WRONG), options=st.sampled_from(OPTIONS[:2]))
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_wrong_shapes_anywhere_rslearn(data, value, options):
    files = _rslearn_files()
    name, path = data.draw(
        st.sampled_from([(n, p) for n, doc in files.items() for p in _paths(doc)])
    )
    _compile_mutated(files, name, path, value, ["--dialect", "rslearn", *options])


@pytest.mark.parametrize(
    ("file", "path", "value", "needle"),
    [
        ("configs/base.yaml", ("model",), 5, "configs/base.yaml:"),
        ("configs/base.yaml", ("model",), [1], "configs/base.yaml:"),
        ("configs/base.yaml", ("model", "init_args"), "x", "configs/base.yaml:"),
        ("configs/base.yaml", ("data",), "x", "configs/base.yaml:"),
        ("configs/base.yaml", ("data", "init_args"), [1], "configs/base.yaml:"),
        ("configs/datasets/a.yaml", (*DEC, "a", 0, "init_args"), "x", "configs/datasets/a.yaml:"),
        ("configs/datasets/a.yaml", (*DEC, "a", 0, "class_path"), None, "configs/datasets/a.yaml:"),
        ("configs/datasets/a.yaml", (*DEC, "a", 0, "class_path"), 5, "configs/datasets/a.yaml:"),
        ("configs/datasets/a.yaml", (*DEC, "a", 0, "class_path"), [1], "configs/datasets/a.yaml:"),
    ],
)
def test_wrong_shapes_name_file_line_and_key(file, path, value, needle):
    with tempfile.TemporaryDirectory() as tmp:
        for args in ([], ["--single-task"]):
            project = Project(Path(tmp))
            for name, doc in NATIVE.items():
                project.write(name, _replace(doc, path, value) if name == file else doc)
            out = Path(tmp) / ("single" if args else "o.yaml")
            output = refused(
                invoke(Path(tmp) / "makers/maker.yaml", "-o", out, *args),
                needle,
                f"at '{'.'.join(map(str, path[:1]))}",
            )
            assert not out.exists(), output


def test_finetune_with_a_scalar_model_override(cli, project):
    run = project.root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
    maker = project.standard(
        global_overrides={"model": {"init_args": 5}}, finetune_from={"run_dir": "../run"}
    )
    refused(cli(maker, "-o", project.root / "o.yaml"), "maker.yaml:", "model.init_args")


def test_integer_keys_with_single_task(cli, project):
    maker = project.standard(global_overrides={"data": {"init_args": {"batch_sizes": {5: 3}}}})
    result = cli(maker, "--single-task", "-o", project.root / "single")
    assert result.exit_code == 0, result.output
    project.write(
        "configs/datasets/a.yaml",
        yaml.safe_dump(dataset({"a": 3})).replace("      a:\n", "      7:\n", 1),
    )
    refused(cli(maker, "-o", project.root / "o.yaml"), "configs/datasets/a.yaml:", "task name 7")


# -- 13. placeholder reports ---------------------------------------------------------------


def test_many_unresolved_placeholders_listed_first_20_with_count(cli, project):
    count = 3000
    project.write(
        "configs/base.yaml",
        dump(BASE) + "many:\n" + "".join(f"  k{i}: ${{missing_{i}}}\n" for i in range(count)),
    )
    output = refused(
        cli(project.standard(), "-o", project.root / "o.yaml"),
        f"{count} unresolved placeholders",
        f"and {count - 20} more",
    )
    listed = [part for part in output.split("; ") if "configs/base.yaml:" in part]
    assert len(listed) == 20
    first_line = len(dump(BASE).splitlines()) + 2
    assert f"configs/base.yaml:{first_line}: ${{missing_0}}" in output
    assert len(output) < 4000


# -- 14. large inputs (correctness; speed is measured by benchmarks/compiler_limits.py) ----


def test_large_maker_with_a_wrong_key_is_refused_at_its_line(cli, project):
    maker = project.standard()
    body = "".join(f"    k{i}: value {i}\n" for i in range(60_000))
    maker.write_text(maker.read_text() + "local_overrides:\n  extra:\n" + body + "unknwn: 1\n")
    line = len(maker.read_text().splitlines())
    refused(cli(maker, "-o", project.root / "o.yaml"), f"maker.yaml:{line}:", "unknwn")


# -- 15, 16. --single-task names and writing -----------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../escaped", "/abs/olute", "a/b", "a\\b", ".", "..", "x\0y", "n" * 251, "~root"]
)
def test_single_task_names_must_be_plain_file_names(cli, project, name):
    project.standard()
    project.write("configs/datasets/b.yaml", dataset({"b1": 2, "b2": 2}, name=name))
    out = project.root / "single"
    refused(cli(project.standard(), "--single-task", "-o", out), "configs/datasets/b.yaml:", "name")
    assert not out.exists()
    assert sorted(p.name for p in project.root.iterdir()) == ["configs", "makers"]


def test_single_task_writes_nothing_when_a_later_target_is_refused(cli, project):
    maker = project.standard()
    out = project.root / "single"
    (out / "b.yaml").mkdir(parents=True)  # the second target is a folder
    refused(cli(maker, "--single-task", "-o", out), "b.yaml", "directory")
    assert not (out / "a.yaml").exists()
    assert not list(out.glob(".*.tmp"))


def test_single_task_same_name_twice_is_refused(cli, project):
    project.standard()
    project.write("configs/datasets/b.yaml", dataset({"b1": 2}, name="a"))
    project.write("configs/datasets/c.yaml", dataset({"c1": 2}, name="a"))
    maker = project.standard(
        dataset_cfgs=["../configs/datasets/b.yaml", "../configs/datasets/c.yaml"]
    )
    refused(cli(maker, "--single-task", "-o", project.root / "s"), "'a'")


# -- 17. YAML 1.2 numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),
        ("1E5", 100000.0),
        ("-2.5e+2", -250.0),
        (".5", 0.5),
        ("1.", 1.0),
        ("012", 12),
        ("0o17", 15),
        ("0x1f", 31),
        ("+7", 7),
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        ("0b101", "0b101"),
        (".inf", float("inf")),
        ("yes", True),
        ("~", None),
    ],
)
def test_yaml_12_numbers_in_native_inputs_and_set(cli, project, text, value):
    maker = project.standard()
    maker.write_text(maker.read_text().replace("lr: 0.01", f"lr: {text}"))
    project.write("configs/base.yaml", dump(BASE) + f"direct: {text}\n")
    out = project.root / "o.yaml"
    assert cli(maker, "-o", out, "--set", f"trainer.via_set={text}").exit_code == 0
    for reader in (yaml.safe_load, lambda t: load(t, "o.yaml")):
        run = reader(out.read_text())
        optimizer = run["model"]["init_args"]["optimizer"]["init_args"]["lr"]
        for got in (optimizer, run["direct"], run["trainer"]["via_set"]):
            assert got == value, (text, got)
            assert type(got) is type(value), (text, got)
    assert cli(maker, "-o", out, "--set", f"lr={text}").exit_code == 0


def test_rslearn_dialect_keeps_yaml_11_numbers(rs_maker):
    maker, tmp = rs_maker
    run = compile_maker(
        maker, dialect="rslearn", sets=["trainer.lr=1e-3"], output=tmp / "o.yaml"
    ).run
    assert run["trainer"]["lr"] == "1e-3"
    assert run["trainer"]["octal"] == 10
    assert run["trainer"]["sexagesimal"] == 90


@pytest.fixture
def rs_maker(tmp_path: Path):
    from test_rslearn_dialect import RsProject

    rs = RsProject(tmp_path)
    maker = rs.classifiers({"t1": 2, "t2": 3})
    base = tmp_path / "base/base.yaml"
    base.write_text(
        base.read_text().replace(
            "  max_epochs: 10\n", "  max_epochs: 10\n  octal: 012\n  sexagesimal: 1:30\n"
        )
    )
    return maker, tmp_path


# -- 18. substitutions using substitutions -------------------------------------------------


def test_substitutions_resolve_transitively(project):
    maker = project.standard(
        substitutions={
            "hidden": "${width}",
            "width": "${base_w * 2}",
            "base_w": 16,
            "lr": "${lr0}",
            "lr0": 0.5,
            "label": "w=${width}",
            "esc": "$${literal}",
        }
    )
    project.write("configs/base.yaml", {**BASE, "label": "${label}", "esc": "${esc}"})
    run = compile_maker(maker).run
    assert run["model"]["init_args"]["model"]["init_args"]["encoder"][0]["init_args"][
        "hidden_sizes"
    ] == [32]
    assert run["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.5
    assert run["label"] == "w=32"
    assert run["esc"] == "${literal}"


@pytest.mark.parametrize(
    ("subs", "cycle"),
    [
        ({"lr": "${lr}"}, "lr -> lr"),
        ({"lr": "${a}", "a": "x${b}", "b": "${lr}"}, "lr -> a -> b -> lr"),
        ({"lr": {"k": ["${a}"]}, "a": "${lr + 1}"}, "lr -> a -> lr"),
    ],
)
def test_substitution_cycles_are_named(cli, project, subs, cycle):
    maker = project.standard(substitutions={"hidden": 32, **subs})
    refused(cli(maker, "-o", project.root / "o.yaml"), "maker.yaml:", cycle)


def test_unresolved_placeholder_inside_a_substitution(cli, project):
    maker = project.standard(substitutions={"hidden": 32, "lr": "${nope}"})
    refused(cli(maker, "-o", project.root / "o.yaml"), "maker.yaml:", "${nope}")
    refused(cli(project.standard(), "--set", "lr=${nope2}"), "--set", "${nope2}")


def test_exponential_substitution_strings_are_refused_quickly(cli, project):
    subs: dict[str, Any] = {"hidden": 32, "lr": 0.1, "s0": "x" * 1000}
    for i in range(1, 40):
        subs[f"s{i}"] = f"${{s{i - 1}}}${{s{i - 1}}}"
    project.write("configs/base.yaml", {**BASE, "big": "${s39}"})
    refused(cli(project.standard(substitutions=subs), "-o", project.root / "o.yaml"), "size cap")


# -- 19. same_label_groups -----------------------------------------------------------------


@pytest.mark.parametrize("merge_heads", [False, True])
@pytest.mark.parametrize("single", [False, True])
def test_label_groups_name_known_tasks_and_are_not_empty(cli, project, merge_heads, single):
    args = (
        ["--single-task", "-o", project.root / "s"] if single else ["-o", project.root / "o.yaml"]
    )
    opts = {"merge_heads": merge_heads, "merge_task_labels": True}
    maker = project.standard(merge_options={**opts, "same_label_groups": [["a", "ghost"]]})
    refused(cli(maker, *args), "maker.yaml:", "ghost")
    maker = project.standard(merge_options={**opts, "same_label_groups": [["a"], []]})
    refused(cli(maker, *args), "maker.yaml:", "at least one task")
    assert not (project.root / "s").exists()
    assert not (project.root / "o.yaml").exists()


# -- 22. deep nesting and --explain '' -----------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 999, 5000])
@pytest.mark.parametrize("where", ["base", "dataset", "info", "set"])
def test_deep_nesting_is_blamed_on_its_file_and_line(cli, project, tmp_path, depth, where):
    nested = "[" * depth + "]" * depth
    maker = project.standard()
    if where == "set":
        refused(cli(maker, "--set", f"x={nested}"), "--set", "nest")
        return
    if where == "info":
        from test_rslearn_dialect import RsProject

        rs = RsProject(tmp_path / "rs")
        maker = rs.classifiers({"t1": 2, "t2": 3})
        (tmp_path / "rs/info/all.yaml").write_text(
            (tmp_path / "rs/info/all.yaml").read_text() + f"deep: {nested}\n"
        )
        refused(cli(maker, "--dialect", "rslearn"), "all.yaml:", "nest")
        return
    name = "configs/base.yaml" if where == "base" else "configs/datasets/b.yaml"
    path = project.root / name
    lines = len(path.read_text().splitlines())
    path.write_text(path.read_text() + f"deep:\n  x: {nested}\n")
    refused(cli(maker, "-o", tmp_path / "o.yaml"), f"{name}:{lines + 2}:", "nest")


@pytest.mark.parametrize("key", ["", " ", ".", "a..b", "model.", ".model"])
def test_explain_bad_keys_say_what_is_wrong(cli, project, key):
    output = refused(cli(project.standard(), "--explain", key), "--explain")
    assert "key" in output


# -- the writer: anything read reads back the same -----------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "yes",
            "no",
            "on",
            "~",
            "null",
            "1e-3",
            "012",
            "1:30",
            "0x1f",
            ".inf",
            "2024-01-02",
            "<<",
            "=",
            "- a",
            "a: b",
            "#c",
            "'q'",
            '"q"',
            "",
            " lead",
            "trail ",
            "a\nb",
            "\x85",
            "\u2028",
            "\ufeff",
            "tab\t",
            "{x}",
            "[x]",
            "&a",
            "*a",
            "!t",
            "%p",
            "@a",
            "`b",
            "|",
            ">",
            "?",
            "-",
            "x" * 1200,
        ]
    ),
)
_keys = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
    st.sampled_from(["yes", "1e-3", "<<", "k" * 1100]),
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=25,
)


@given(_trees)
@settings(max_examples=200, deadline=None)
def test_written_yaml_reads_back_identically(tree):
    text = emit(tree)
    assert yaml.safe_load(text) == tree
    assert load(text, "x.yaml", "1.2") == tree
    assert load(text, "x.yaml", "1.1") == tree


def test_timeout_guard_for_fifo_in_a_subprocess(tmp_path):
    """A FIFO given as the maker must not block the process (it is refused at once)."""
    fifo = tmp_path / "maker.yaml"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "compiler", str(fifo)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "not a regular file" in result.stderr


def test_output_onto_a_device_or_fifo_is_refused(cli, project, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for target in (Path("/dev/null"), fifo):
        refused(cli(project.standard(), "-o", target), "not a regular file")
    assert fifo.exists()
    assert not fifo.is_file()


def test_rslearn_text_substitution_growth_is_bounded(cli, rs_maker):
    maker, tmp = rs_maker
    text = maker.read_text().replace(
        "helios_checkpoint_path: /ckpt", f"helios_checkpoint_path: {'c' * 200_000}"
    )
    maker.write_text(text)
    base = tmp / "base/base.yaml"
    base.write_text(base.read_text() + "".join(f"p{i}: {{CHECKPOINT_PATH}}\n" for i in range(400)))
    refused(cli(maker, "--dialect", "rslearn", "--max-file-size", "10M"), "size cap")


# -- 23. the launcher runs plain compiles without click, exactly as click would ------------

FAST_CASES = [
    [],
    ["-q"],
    ["--print"],
    ["--print", "-q", "--set", "lr=1e-3", "--set=hidden=8"],
    ["--explain", "trainer.max_epochs", "--explain=model.init_args.optimizer"],
    ["--dialect", "native", "-o", "{tmp}/x.yaml"],
    ["--output={tmp}/y.yaml", "--quiet"],
    ["--single-task", "-o", "{tmp}/single"],
    ["--max-file-size", "1k"],
    ["--max-file-size=2M", "--print"],
    ["--set", "trainer.x=[1"],
    ["--dialect", "nope"],
    ["--single-task", "--print"],
    ["--explain", ""],
    ["-o"],
    ["--bogus"],
    ["-h"],
    ["--set", "lr=${nope}"],
    ["extra_positional"],
]


def _own_output(case: list[str]) -> bool:
    return not any(a in ("-o", "-h", "--single-task") or a.startswith("--output") for a in case)


@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: " ".join(c) or "plain")
def test_launcher_matches_the_click_command(project, tmp_path, case):
    maker = project.standard()
    results = []
    launchers = (
        ["-m", "compiler"],
        ["-c", "from compiler.cli import main; main(prog_name='mtl-make-config')"],
    )
    for i, launcher in enumerate(launchers):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        args = [a.replace("{tmp}", str(run_dir)) for a in case]
        if _own_output(case):
            args += ["-o", str(run_dir / "o.yaml")]
        result = subprocess.run(
            [sys.executable, *launcher, str(maker), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert "Traceback" not in result.stderr
        files = {
            p.relative_to(run_dir).as_posix(): p.read_text().replace(str(run_dir), "RUN")
            for p in sorted(run_dir.rglob("*"))
            if p.is_file()
        }

        out, err = (text.replace(str(run_dir), "RUN") for text in (result.stdout, result.stderr))
        results.append((result.returncode, out, err, files))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("tail", "reported"),
    [
        ("unknwn: 1\n", True),  # a real top-level key
        ('output_path: "a\nunknwn: 1"\n', False),  # inside a quoted string spanning lines
        ("finetune_from: [a,\nunknwn: 1]\n", False),  # inside a flow collection
        ("output_path: |\n  text\nunknwn: 1\n", True),  # after a block scalar
    ],
)
def test_large_maker_key_prescan_is_never_fooled(cli, project, tail, reported):
    maker = project.standard()
    body = "".join(f"    k{i}: value {i}\n" for i in range(40_000))
    maker.write_text(maker.read_text() + "local_overrides:\n  extra:\n" + body + tail)
    result = cli(maker, "-o", project.root / "o.yaml")
    clean(result)
    if reported:
        refused(result, "maker.yaml:", "unknown maker key 'unknwn'")
    else:
        assert "unknown maker key" not in result.output
