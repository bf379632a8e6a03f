"""Issue 12, item 14 (and the data side of items 7, 8): data modules check what they load.

Bad files, columns, rows, label ranges and dtypes, and non-finite inputs are refused at
``setup`` with a ``DataConfigError`` naming the file (and CSV line), the key path and the first
bad row; ``mtl-run`` reports them with exit code 2 (CPU only: no accelerator is used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from file_run import file_config, write_csv

from runtime.cli import main
from runtime.data import MultiDatasetDataModule, SklearnDataModule, TensorFileDataModule
from runtime.data.errors import DataConfigError
from runtime.data.synthetic import SyntheticDataModule
from runtime.data.validate import expect_tasks
from runtime.tasks import ClassificationTask, MultiLabelTask, RegressionTask


def _edit_cell(line: int, column: int, value: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        cells = lines[line - 1].split(",")
        cells[column] = value
        lines[line - 1] = ",".join(cells)
        return lines

    return edit


def _blank_column(column: int) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        out = lines[:1]
        for row in lines[1:]:
            cells = row.split(",")
            cells[column] = ""
            out.append(",".join(cells))
        return out

    return edit


def _setup(path: Path, tasks: dict | None = None, **args) -> MultiDatasetDataModule:
    module = TensorFileDataModule(
        path=str(path),
        inputs=["f0", "f1", "f2", "f3"],
        targets=args.pop("targets", {"t": "y"}),
        batch_size=8,
        **args,
    )
    data = MultiDatasetDataModule({"a": module})
    expect_tasks(data, tasks if tasks is not None else {"t": ClassificationTask(num_classes=3)})
    data.setup("fit")
    return data


# (case, edit of the CSV's lines, expected line, message pattern, key path end)
CSV_CASES = [
    (
        "label out of range",
        _edit_cell(7, 4, "7"),
        7,
        r"class id 7, out of range.*3 classes",
        "targets.t",
    ),
    ("negative label", _edit_cell(5, 4, "-3"), 5, r"class id -3, out of range", "targets.t"),
    ("fractional class id", _edit_cell(6, 4, "1.5"), 6, r"1\.5, not a whole number", "targets.t"),
    (
        "text in the label column",
        _edit_cell(9, 4, "cat"),
        None,
        r"'y' is not numeric.*line 9",
        "targets.t",
    ),
    (
        "ragged row",
        lambda ls: [*ls[:10], ls[10] + ",9", *ls[11:]],
        11,
        r"7 cells.*header has 6",
        None,
    ),
    ("NaN input", _edit_cell(12, 2, "nan"), 12, r"input column 'f2'.*non-finite", "inputs"),
    ("inf input", _edit_cell(13, 1, "inf"), 13, r"input column 'f1'.*non-finite", "inputs"),
    (
        "all labels missing",
        _blank_column(4),
        None,
        r"none of the \d+ training rows has a label",
        "targets.t",
    ),
    ("header only", lambda ls: ls[:1], None, r"no data rows", None),
]


@pytest.mark.parametrize(
    ("case", "edit", "line", "pattern", "key"), CSV_CASES, ids=[c[0] for c in CSV_CASES]
)
def test_bad_csv_is_refused_naming_file_line_column_and_row(
    tmp_path, case, edit, line, pattern, key
):
    good = write_csv(tmp_path / "good.csv")
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(edit(good.read_text().splitlines())) + "\n")
    with pytest.raises(DataConfigError, match=pattern) as info:
        _setup(path)
    err = info.value
    assert err.file == str(path)
    assert err.line == line
    assert err.key[:2] == ("data_modules", "a")
    if key is not None:
        assert ".".join(err.key).endswith(key)
    if line is not None and key is not None:
        assert f"first bad row: {line - 2}" in str(err)  # rows count from 0 after the header


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "empty"),
        (b"f0,f1,f2,f3,y,r\n0,0,0,0,1,0\n" + bytes([0xFF, 0xFE, 0x81]) * 10, "not a UTF-8"),
        (b"\x00\x01garbage\x00", "not a UTF-8|NUL|not a readable CSV"),
    ],
)
def test_empty_and_garbage_files_are_refused(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataConfigError, match=pattern) as info:
        _setup(path)
    assert info.value.file == str(path)


def test_missing_file_and_column_name_them(tmp_path):
    with pytest.raises(DataConfigError, match="not found") as info:
        _setup(tmp_path / "nope.csv")
    assert info.value.file == str(tmp_path / "nope.csv")
    path = write_csv(tmp_path / "good.csv")
    with pytest.raises(DataConfigError, match=r"column 'yy' not found \(did you mean 'y'\?\)"):
        _setup(path, targets={"t": "yy"})


def test_label_dtype_follows_the_task_and_lossy_casts_are_refused(tmp_path):
    path = write_csv(tmp_path / "good.csv")
    # a float column of whole numbers is a valid class column; a float32 request for a
    # classification task is not
    data = _setup(
        path,
        targets={"t": "y", "r": "r"},
        tasks={"t": ClassificationTask(num_classes=3), "r": RegressionTask()},
    )
    train = data.data_modules["a"].train_dataset
    assert train.targets["t"].dtype == torch.int64
    assert train.targets["r"].dtype == torch.float32
    with pytest.raises(DataConfigError, match=r"target_dtypes\.t is float32.*int64") as info:
        _setup(path, target_dtypes={"t": "float32"})
    assert info.value.key[-2:] == ("target_dtypes", "t")
    # an explicit int64 request never silently truncates 0.5 into 0
    with pytest.raises(DataConfigError, match="not a whole number"):
        _setup(path, targets={"t": "r"}, target_dtypes={"t": "int64"}, tasks={})


def test_pt_file_labels_are_checked_against_multilabel_and_regression_tasks(tmp_path):
    x = torch.randn(20, 4)
    columns = {f"f{i}": x[:, i] for i in range(4)}
    labels = torch.randint(0, 2, (20, 3)).float()
    labels[4, 1] = 2.0
    torch.save({**columns, "y": labels}, tmp_path / "m.pt")
    with pytest.raises(DataConfigError, match=r"must be 0 or 1.*first bad row: 4"):
        _setup(tmp_path / "m.pt", tasks={"t": MultiLabelTask(num_labels=3)})
    with pytest.raises(DataConfigError, match=r"shape \[20, 3\].*\[N, 2\]"):
        _setup(tmp_path / "m.pt", tasks={"t": MultiLabelTask(num_labels=2)})
    values = torch.randn(20)
    values[3] = float("inf")
    torch.save({**columns, "y": values}, tmp_path / "r.pt")
    with pytest.raises(DataConfigError, match=r"infinite value.*first bad row: 3"):
        _setup(tmp_path / "r.pt", tasks={"t": RegressionTask()})


def test_bundled_and_generated_data_are_checked_too():
    digits = MultiDatasetDataModule({"d": SklearnDataModule("digits", {"t": "digit"})})
    expect_tasks(digits, {"t": ClassificationTask(num_classes=3)})  # digit has 10 classes
    with pytest.raises(DataConfigError, match=r"'digits'.*'digit'.*out of range") as info:
        digits.setup("fit")
    assert info.value.key == ("data_modules", "d", "init_args", "targets", "t")
    subset = SklearnDataModule("digits", {"t": "digit"}, subset=[3, 12])
    with pytest.raises(DataConfigError, match=r"no classes \[12\]"):
        subset.setup("fit")
    missing = SyntheticDataModule(
        num_samples=40,
        input_shape=[4],
        tasks={"t": {"kind": "classification", "missing_fraction": 1}},
    )
    with pytest.raises(DataConfigError, match=r"none of the .* training rows has a label"):
        missing.setup("fit")


def test_mtl_run_reports_data_errors_with_exit_2_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = write_csv(tmp_path / "good.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        good.read_text()
        .replace("\n", "\n", 1)
        .replace(
            good.read_text().splitlines()[3],
            ",".join([*good.read_text().splitlines()[3].split(",")[:4], "9", "0"]),
        )
    )
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(file_config(bad)))
    for args in (["--check", "run.yaml"], ["fit", "run.yaml"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"{bad}:4:" in err
        assert "data.init_args.data_modules.a.init_args.targets.t" in err
        assert "class id 9" in err
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()
