"""Each rule of the rslearn dialect, on small projects written to tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import Project

from compiler.build import compile_maker
from compiler.errors import ConfigError
from compiler.rslearn import substitute_text

DEC = ("model", "init_args", "model", "init_args")

BASE = """\
model:
  class_path: rslp.Module
  init_args:
    model:
      class_path: rslearn.models.multitask.MultiTaskMergedModel
      init_args:
        encoder:
          - class_path: rslp.helios.model.Helios
            init_args:
              checkpoint_path: "{CHECKPOINT_PATH}"
              forward_kwargs:
                patch_size: {PATCH_SIZE}
        decoders:  # filled in
    lr: 0.0001
data:
  class_path: rslearn.train.data_module.MultiDatasetDataModule
  init_args:
    num_workers: 4
    data_modules:  # filled in
trainer:
  max_epochs: 10
  callbacks:
    - class_path: cb.A
all_dataset_info_path: INFO
"""

CLS = (
    "rslearn.models.pooling_decoder.PoolingDecoder",
    "rslearn.train.tasks.classification.ClassificationHead",
)
DET = ("rslearn.models.faster_rcnn.FasterRCNN", None)


def dataset_text(
    task: str,
    kind: tuple = CLS,
    count_key: str = "out_channels",
    count: int = 2,
    batch: int | None = 8,
    extra_task_args: str = "",
) -> str:
    first, head = kind
    layers = (
        f"            - class_path: {first}\n"
        f"              init_args:\n"
        f"                in_channels: {{ENCODER_EMBEDDING_SIZE}}\n"
        f"                {count_key}: {count}\n"
    )
    if head:
        layers += f"            - class_path: {head}\n"
    batch_line = f"    batch_size: {batch}\n" if batch is not None else ""
    return (
        "model:\n"
        "  class_path: rslearn.train.lightning_module.RslearnLightningModule\n"
        "  init_args:\n"
        "    lr: 0.5\n"
        "    model:\n"
        "      init_args:\n"
        "        decoders:\n"
        f"          {task}:\n"
        f"{layers}"
        "data:\n"
        "  class_path: rslearn.train.data_module.RslearnDataModule\n"
        "  init_args:\n"
        f"    path: /data/{task}\n"
        f"{batch_line}"
        "    task:\n"
        "      class_path: rslearn.train.tasks.multi_task.MultiTask\n"
        "      init_args:\n"
        "        tasks:\n"
        f"          {task}:\n"
        "            class_path: rslearn.train.tasks.classification.ClassificationTask\n"
        "        input_mapping:\n"
        f"          {task}:\n"
        "            label: targets\n"
        f"{extra_task_args}"
        "trainer:\n"
        "  max_epochs: 99\n"
    )


class RsProject(Project):
    """A small rslearn project: base/, datasets/, info/ and makers/ under one root."""

    def info(self, entries: dict[str, tuple[int, str, str]]) -> None:
        self.write(
            "info/all.yaml",
            {
                t: {"num_outputs": n, "num_outputs_key": key, "outputs_key": out, "task_type": "x"}
                for t, (n, key, out) in entries.items()
            },
        )

    def maker(self, datasets: list, base: str | None = None, **fields: Any) -> Path:
        self.write(
            "base/base.yaml", base if base is not None else BASE.replace("INFO", "../info/all.yaml")
        )
        doc: dict[str, Any] = {
            "base_cfg": "../base/base.yaml",
            "output_path": "OUT.yaml",
            "dataset_cfgs": datasets,
            "substitutions": {
                "patch_size": 8,
                "encoder_embedding_size": 768,
                "helios_checkpoint_path": "/ckpt",
            },
        }
        doc.update(fields)
        return self.write("makers/maker.yaml", doc)

    def classifiers(
        self, tasks: dict[str, int], groups: Any = None, merge_labels: bool = True, **fields: Any
    ) -> Path:
        """One classification dataset per task; merged heads; the info file to match."""
        self.info({t: (n, "out_channels", "class") for t, n in tasks.items()})
        for t, n in tasks.items():
            self.write(f"datasets/{t}.yaml", dataset_text(t, count=n))
        fields.setdefault(
            "merge_options",
            {"merge_heads": True, "merge_task_labels": merge_labels, "same_label_groups": groups},
        )
        return self.maker([f"../datasets/{t}.yaml" for t in tasks], **fields)


@pytest.fixture
def rs(tmp_path: Path) -> RsProject:
    return RsProject(tmp_path)


def build(maker: Path, **kw: Any) -> dict:
    return compile_maker(maker, dialect="rslearn", **kw).run


def cli(*args: Any):
    from compiler.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def bad(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in {result.output!r}"
    return result.output


def merged(run: dict) -> dict:
    return run["model"]["init_args"]["model"]["init_args"]


# -- substitution --------------------------------------------------------------------------


def test_textual_substitution_in_upstream_order() -> None:
    values = {
        "patch_size": 8,
        "encoder_embedding_size": 768,
        "helios_checkpoint_path": "/c/{PATCH_SIZE}",
    }
    text = (
        "a: {CHECKPOINT_PATH}\nb: {PATCH_SIZE}\nc: {256/PATCH_SIZE}\nd: {128/PATCH_SIZE}\n"
        "e: [{ENCODER_EMBEDDING_SIZE}]\n{PATCH_SIZE}_key: 1\nf: ${native}\n"
    )
    out, problems = substitute_text(text, values)
    assert problems == []
    # the checkpoint value's own {PATCH_SIZE} is replaced too, as upstream's chain of replaces does
    assert yaml.safe_load(out) == {
        "a": "/c/8",
        "b": 8,
        "c": 32,
        "d": 16,
        "e": [768],
        "8_key": 1,
        "f": "${native}",
    }


def test_substitution_problems_only_for_used_placeholders() -> None:
    out, problems = substitute_text("a: 1\n", {})
    assert (out, problems) == ("a: 1\n", [])
    _, problems = substitute_text(
        "a: {256/PATCH_SIZE}\nb: {ENCODER_EMBEDDING_SIZE}\n", {"patch_size": "big"}
    )
    assert [p for p, _ in problems] == ["{256/PATCH_SIZE}", "{ENCODER_EMBEDDING_SIZE}"]


def test_files_are_substituted_as_text(rs: RsProject) -> None:
    run = build(rs.classifiers({"a": 2}))
    encoder = merged(run)["encoder"][0]["init_args"]
    assert encoder == {"checkpoint_path": "/ckpt", "forward_kwargs": {"patch_size": 8}}
    assert merged(run)["decoders"]["ClassificationHead"][0]["init_args"]["in_channels"] == 768


def test_maker_overrides_reach_output_verbatim(rs: RsProject) -> None:
    maker = rs.classifiers(
        {"a": 2},
        local_overrides={"data": {"init_args": {"note": "{PATCH_SIZE}"}}},
        global_overrides={"model": {"init_args": {"ckpt": "{CHECKPOINT_PATH}", "n": "${x}"}}},
    )
    run = build(maker)
    assert run["model"]["init_args"]["ckpt"] == "{CHECKPOINT_PATH}"
    assert run["model"]["init_args"]["n"] == "${x}"
    assert run["data"]["init_args"]["data_modules"]["a"]["init_args"]["note"] == "{PATCH_SIZE}"


def test_missing_substitution_is_located_and_nothing_written(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2}, substitutions={"patch_size": 8})
    out = rs.root / "out.yaml"
    text = bad(
        cli("--dialect", "rslearn", maker, "-o", out),
        "base.yaml:10",
        "{CHECKPOINT_PATH}",
        "datasets/a.yaml:",
        "{ENCODER_EMBEDDING_SIZE}",
        "substitutions.encoder_embedding_size",
    )
    assert "2 unresolved placeholders" in text
    assert not out.exists()


# -- one task per dataset --------------------------------------------------------------------


def test_assembly_shapes(rs: RsProject) -> None:
    extra = "        extra_flag: true\n"
    rs.info({"a": (2, "out_channels", "class"), "b": (3, "out_channels", "class")})
    rs.write("datasets/a.yaml", dataset_text("a", batch=4, extra_task_args=extra))
    rs.write("datasets/b.yaml", dataset_text("b", count=3, batch=32, extra_task_args=extra))
    run = build(rs.maker(["../datasets/a.yaml", "../datasets/b.yaml"]))
    assert "all_dataset_info_path" not in run
    data = run["data"]["init_args"]
    assert data["batch_sizes"] == {"a": 4, "b": 32}
    assert list(data["data_modules"]) == ["a", "b"]
    module = data["data_modules"]["b"]
    assert module["init_args"]["batch_size"] == 32  # stays inside the data module, as upstream
    assert module["class_path"] == "rslearn.train.data_module.RslearnDataModule"
    assert list(module["init_args"]["task"]["init_args"]["tasks"]) == ["b"]
    task = run["model"]["init_args"]["task"]
    assert task["class_path"] == "rslearn.train.tasks.multi_task.MultiTask"
    assert list(task["init_args"]["tasks"]) == ["a", "b"]
    assert task["init_args"]["input_mapping"] == {
        "a": {"label": "targets"},
        "b": {"label": "targets"},
    }
    assert task["init_args"]["extra_flag"] is True
    # the dataset's own model settings and trainer are dropped; the base's stay
    assert run["model"]["class_path"] == "rslp.Module"
    assert run["model"]["init_args"]["lr"] == 0.0001
    assert run["trainer"] == {"max_epochs": 10, "callbacks": [{"class_path": "cb.A"}]}
    assert list(merged(run)["decoders"]) == ["a", "b"]  # no merge_heads: one decoder per task


def test_dataset_list_is_deep_merged_with_list_append(rs: RsProject) -> None:
    rs.info({"a": (2, "out_channels", "class")})
    rs.write("datasets/a.yaml", dataset_text("a"))
    rs.write(
        "datasets/a_more.yaml",
        {"data": {"init_args": {"batch_size": 2, "groups+": ["g2"], "path": "/other"}}},
    )
    maker = rs.maker(
        [["../datasets/a.yaml", "../datasets/a_more.yaml"]],
        local_overrides={"data": {"init_args": {"groups+": ["g3"]}}},
        global_overrides={"trainer": {"callbacks+": [{"class_path": "cb.B"}]}},
    )
    run = build(maker)
    module = run["data"]["init_args"]["data_modules"]["a"]["init_args"]
    assert module["groups"] == ["g2", "g3"]
    assert module["path"] == "/other"
    assert run["data"]["init_args"]["batch_sizes"] == {"a": 2}
    assert [c["class_path"] for c in run["trainer"]["callbacks"]] == ["cb.A", "cb.B"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            dataset_text("a")
            .replace("          a:\n", "          a:\n", 1)
            .replace(
                "        decoders:\n", "        decoders:\n          z: [{class_path: x.Y}]\n"
            ),
            "exactly one task",
        ),
        (dataset_text("a", batch=None), "batch_size"),
        (dataset_text("a").replace("    task:\n", "    not_task:\n"), "task definitions"),
    ],
)
def test_bad_dataset_is_located_and_nothing_written(rs: RsProject, text: str, needle: str) -> None:
    rs.info({"a": (2, "out_channels", "class")})
    rs.write("datasets/a.yaml", text)
    out = rs.root / "out.yaml"
    bad(
        cli("--dialect", "rslearn", rs.maker(["../datasets/a.yaml"]), "-o", out),
        "datasets/a.yaml:",
        needle,
    )
    assert not out.exists()


def test_same_task_twice_is_an_error(rs: RsProject) -> None:
    rs.info({"a": (2, "out_channels", "class")})
    rs.write("datasets/a.yaml", dataset_text("a"))
    rs.write("datasets/a2.yaml", dataset_text("a"))
    maker = rs.maker(["../datasets/a.yaml", "../datasets/a2.yaml"])
    bad(
        cli("--dialect", "rslearn", maker, "-o", rs.root / "o.yaml"),
        "datasets/a2.yaml:",
        "task 'a' is declared twice",
        "datasets/a.yaml and by",
    )


# -- dataset info ----------------------------------------------------------------------------


def test_counts_and_keys_come_from_the_info_file(rs: RsProject) -> None:
    rs.info({"det": (5, "num_classes", "labels"), "det2": (4, "num_classes", "labels")})
    rs.write("datasets/det.yaml", dataset_text("det", DET, "num_classes", count=99))
    rs.write("datasets/det2.yaml", dataset_text("det2", DET, "num_classes", count=1))
    maker = rs.maker(
        ["../datasets/det.yaml", "../datasets/det2.yaml"],
        merge_options={"merge_heads": True, "merge_task_labels": True},
    )
    compiled = compile_maker(maker, dialect="rslearn", output=rs.root / "x.yaml")
    args = merged(compiled.run)
    assert args["decoders"]["FasterRCNN"][0]["init_args"]["num_classes"] == 9
    assert args["task_label_offsets"] == {
        "det": {"offset": 0, "outputs_key": "labels", "num_outputs": 5},
        "det2": {"offset": 5, "outputs_key": "labels", "num_outputs": 4},
    }
    assert compiled.inputs[-1].path == rs.root / "info" / "all.yaml"
    assert "all.yaml" in compiled.header()


def test_count_goes_to_the_first_layer(rs: RsProject) -> None:
    run = build(rs.classifiers({"a": 2, "b": 8}))
    layers = merged(run)["decoders"]["ClassificationHead"]
    assert layers[0]["init_args"]["out_channels"] == 10
    assert layers[1] == {"class_path": CLS[1]}


def test_task_missing_from_info_names_task_and_file(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3})
    rs.info({"a": (2, "out_channels", "class")})
    out = rs.root / "out.yaml"
    bad(
        cli("--dialect", "rslearn", maker, "-o", out),
        "task 'b'",
        "info/all.yaml",
        "datasets/b.yaml:",
    )
    assert not out.exists()


def test_info_entry_without_fields(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2})
    rs.write("info/all.yaml", {"a": {"num_outputs": 2}})
    with pytest.raises(ConfigError, match="lacks num_outputs_key, outputs_key"):
        build(maker)


def test_missing_info_file_points_at_the_base(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2})
    (rs.root / "info" / "all.yaml").unlink()
    bad(
        cli("--dialect", "rslearn", maker, "-o", rs.root / "o.yaml"),
        "base/base.yaml:",
        "all_dataset_info_path",
        "not found",
    )


def test_info_only_needed_to_merge_heads(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2}, merge_options={})
    (rs.root / "info" / "all.yaml").unlink()
    run = build(maker)
    assert "all_dataset_info_path" not in run
    assert "task_label_offsets" not in merged(run)


def test_different_count_keys_in_one_head(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3})
    rs.info({"a": (2, "out_channels", "class"), "b": (3, "num_classes", "class")})
    with pytest.raises(ConfigError, match="different num_outputs_key"):
        build(maker)


# -- label layout ----------------------------------------------------------------------------


def test_groups_first_then_dataset_order(rs: RsProject) -> None:
    tasks = {"c": 3, "a": 2, "d": 4, "b": 2}
    run = build(rs.classifiers(tasks, groups=[["b", "a"]]))
    args = merged(run)
    assert args["decoder_to_target"] == {"ClassificationHead": ["c", "a", "d", "b"]}
    offsets = {t: e["offset"] for t, e in args["task_label_offsets"].items()}
    assert offsets == {"a": 0, "b": 0, "c": 2, "d": 5}
    assert args["decoders"]["ClassificationHead"][0]["init_args"]["out_channels"] == 9


def test_absent_group_members_are_ignored(rs: RsProject) -> None:
    run = build(rs.classifiers({"a": 2, "b": 3}, groups=[["x", "y"], ["a", "nope"]]))
    offsets = {t: e["offset"] for t, e in merged(run)["task_label_offsets"].items()}
    assert offsets == {"a": 0, "b": 2}


def test_group_with_absent_last_member_is_counted_once(rs: RsProject) -> None:
    """Upstream never adds such a group's block size, so 'c' would overlap 'a'/'b' at 0."""
    run = build(rs.classifiers({"a": 2, "b": 2, "c": 3}, groups=[["a", "b", "absent"]]))
    args = merged(run)
    offsets = {t: e["offset"] for t, e in args["task_label_offsets"].items()}
    assert offsets == {"a": 0, "b": 0, "c": 2}
    assert args["decoders"]["ClassificationHead"][0]["init_args"]["out_channels"] == 5


def test_group_members_need_equal_counts(rs: RsProject) -> None:
    with pytest.raises(ConfigError, match="same output count"):
        build(rs.classifiers({"a": 2, "b": 3}, groups=[["a", "b"]]))


def test_task_in_two_groups(rs: RsProject) -> None:
    with pytest.raises(ConfigError, match="two label groups"):
        build(rs.classifiers({"a": 2, "b": 2}, groups=[["a", "b"], ["b"]]))


def test_heads_split_by_last_layer_class_in_dataset_order(rs: RsProject) -> None:
    rs.info({"det": (2, "num_classes", "labels"), "cls": (3, "out_channels", "class")})
    rs.write("datasets/det.yaml", dataset_text("det", DET, "num_classes"))
    rs.write("datasets/cls.yaml", dataset_text("cls", count=3))
    run = build(
        rs.maker(
            ["../datasets/det.yaml", "../datasets/cls.yaml"],
            merge_options={"merge_heads": True, "merge_task_labels": True},
        )
    )
    args = merged(run)
    assert list(args["decoders"]) == ["FasterRCNN", "ClassificationHead"]
    assert args["decoder_to_target"] == {"FasterRCNN": ["det"], "ClassificationHead": ["cls"]}
    assert args["task_label_offsets"]["cls"]["offset"] == 0


def test_differing_decoders_warn_and_keep_the_last(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3})
    rs.write(
        "datasets/b.yaml",
        dataset_text("b", count=3).replace(
            "in_channels: {ENCODER_EMBEDDING_SIZE}", "in_channels: 5"
        ),
    )
    compiled = compile_maker(maker, dialect="rslearn", output=rs.root / "x.yaml")
    layer = merged(compiled.run)["decoders"]["ClassificationHead"][0]["init_args"]
    assert layer == {"in_channels": 5, "out_channels": 5}
    assert any("differ" in w and "last task" in w for w in compiled.warnings)


def test_heads_merge_after_global_overrides(rs: RsProject) -> None:
    """Upstream merges heads last, so global overrides address the per-task decoders."""
    override = {
        "model": {
            "init_args": {
                "model": {
                    "init_args": {
                        "decoders": {
                            "b": [
                                {
                                    "class_path": CLS[0],
                                    "init_args": {
                                        "in_channels": 768,
                                        "out_channels": 3,
                                        "dropout": 0.1,
                                    },
                                },
                                {"class_path": CLS[1]},
                            ]
                        }
                    }
                }
            }
        }
    }
    compiled = compile_maker(
        rs.classifiers({"a": 2, "b": 3}, global_overrides=override),
        dialect="rslearn",
        output=rs.root / "x.yaml",
    )
    layer = merged(compiled.run)["decoders"]["ClassificationHead"][0]["init_args"]
    assert layer == {"in_channels": 768, "out_channels": 5, "dropout": 0.1}


# -- merge_heads without merge_task_labels ---------------------------------------------------


def test_merge_heads_without_labels_shares_the_output_layer(rs: RsProject) -> None:
    run = build(rs.classifiers({"a": 2, "b": 2}, merge_labels=False))
    args = merged(run)
    assert args["task_label_offsets"] == {
        "a": {"offset": 0, "outputs_key": "class", "num_outputs": 2},
        "b": {"offset": 0, "outputs_key": "class", "num_outputs": 2},
    }
    assert args["decoders"]["ClassificationHead"][0]["init_args"]["out_channels"] == 2


def test_merge_heads_without_labels_needs_equal_counts(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3}, merge_labels=False)
    bad(
        cli("--dialect", "rslearn", maker, "-o", rs.root / "o.yaml"),
        "maker.yaml:",
        "merge_task_labels",
        "a: 2, b: 3",
    )
    assert not (rs.root / "o.yaml").exists()


# -- detection, CLI and provenance ------------------------------------------------------------


def test_auto_detection_and_message(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2})
    out = rs.root / "out.yaml"
    result = cli(maker, "-o", out)
    assert result.exit_code == 0, result.output
    assert "dialect rslearn (" in result.output
    assert "all_dataset_info_path" in result.output
    assert out.read_text().startswith("# Generated by mtl-make-config")
    assert "(dialect: rslearn)" in out.read_text().splitlines()[0]


def test_auto_detection_by_placeholders(rs: RsProject) -> None:
    base = BASE.replace("all_dataset_info_path: INFO\n", "")
    rs.classifiers({"a": 2})
    maker = rs.maker(["../datasets/a.yaml"], base=base)
    result = cli(maker, "--print")
    assert result.exit_code == 0, result.output
    assert "dialect rslearn (" in result.output
    assert "{UPPER_CASE}" in result.output


def test_merge_heads_without_info_path(rs: RsProject) -> None:
    rs.classifiers({"a": 2})
    maker = rs.maker(
        ["../datasets/a.yaml"],
        base=BASE.replace("all_dataset_info_path: INFO\n", ""),
        merge_options={"merge_heads": True, "merge_task_labels": True},
    )
    bad(
        cli("--dialect", "rslearn", maker, "-o", rs.root / "o.yaml"),
        "base/base.yaml",
        "all_dataset_info_path",
    )


def test_explain_points_at_datasets_and_info(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3})
    prefix = "model.init_args.model.init_args."
    result = cli(
        maker,
        "-q",
        "--explain",
        "data.init_args.batch_sizes.b",
        "--explain",
        "model.init_args.task.init_args.tasks.a",
        "--explain",
        prefix + "task_label_offsets.b.num_outputs",
        "--explain",
        prefix + "decoders.ClassificationHead.0.init_args.out_channels",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "datasets/b.yaml:" in out.split("data.init_args.batch_sizes.b", 1)[1]
    assert "datasets/a.yaml:" in out.split("model.init_args.task.init_args.tasks.a", 1)[1]
    offsets = out.split("task_label_offsets.b.num_outputs", 1)[1]
    assert "dataset info" in offsets
    assert "info/all.yaml:" in offsets
    assert "label merging" in out


def test_output_is_deterministic(rs: RsProject) -> None:
    maker = rs.classifiers({"a": 2, "b": 3}, groups=[["a"]])
    first = compile_maker(maker, output=rs.root / "x.yaml").text()
    assert compile_maker(maker, output=rs.root / "x.yaml").text() == first


def test_decoders_removed_by_global_overrides(rs: RsProject) -> None:
    gone = {"model": {"init_args": {"model": {"init_args": {"decoders": {"a": None}}}}}}
    maker = rs.classifiers({"a": 2, "b": 2}, global_overrides=gone)
    bad(cli(maker, "-o", rs.root / "o.yaml"), "maker.yaml:", "cannot merge heads", "a")
    assert not (rs.root / "o.yaml").exists()
