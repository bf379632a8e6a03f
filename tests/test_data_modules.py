"""Per-dataset modules (sklearn, tensor files, synthetic) and the multi-dataset wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from torch.utils.data import Dataset

from runtime.data import (
    DataConfigError,
    DatasetModule,
    MultiDatasetDataModule,
    SklearnDataModule,
    SyntheticDataModule,
    TensorFileDataModule,
)


def splits(module: DatasetModule) -> list:
    module.setup("fit")
    return [module.train_dataset, module.val_dataset, module.test_dataset]


def all_targets(module: DatasetModule, task: str) -> torch.Tensor:
    return torch.cat([split.targets[task] for split in splits(module)])


# ---------------------------------------------------------------- sklearn
def test_digit_label_sets_agree_with_the_digit() -> None:
    module = SklearnDataModule("digits", {"d": "digit", "p": "parity", "g": "ge5"})
    train = splits(module)[0]
    digit = train.targets["d"]
    assert torch.equal(train.targets["p"], digit % 2)
    assert torch.equal(train.targets["g"], (digit >= 5).long())
    assert train.inputs.dtype == torch.float32
    assert train.inputs.shape[1] == 64
    assert sum(len(s) for s in splits(module)) == 1797
    assert abs(float(train.inputs.mean())) < 1e-3  # standardized with training statistics


def test_subset_keeps_listed_classes_and_renumbers_them_in_order() -> None:
    module = SklearnDataModule("digits", {"d": "digit", "p": "parity"}, subset=[7, 5, 9])
    labels, parity = all_targets(module, "d"), all_targets(module, "p")
    assert set(labels.tolist()) == {0, 1, 2}
    original = torch.tensor([7, 5, 9])[labels]
    assert torch.equal(parity, original % 2)
    assert len(labels) == sum(np.isin(__import__("sklearn").datasets.load_digits().target,
                                      [5, 7, 9]))  # fmt: skip


def test_split_is_seeded_and_stratified() -> None:
    def val_labels(seed: int) -> torch.Tensor:
        module = SklearnDataModule("iris", {"c": "class"}, seed=seed)
        return splits(module)[1].targets["c"]

    assert torch.equal(val_labels(0), val_labels(0))
    assert torch.bincount(val_labels(0)).tolist() == [10, 10, 10]  # 20% of 50 per class
    module_a, module_b = (SklearnDataModule("iris", {"c": "class"}, seed=s) for s in (0, 1))
    assert not torch.equal(splits(module_a)[1].inputs, splits(module_b)[1].inputs)


def test_regression_dataset_gives_float_targets() -> None:
    train = splits(SklearnDataModule("diabetes", {"y": "target"}))[0]
    assert train.targets["y"].dtype == torch.float32
    assert train.targets["y"].dim() == 1
    assert abs(float(train.targets["y"].mean())) < 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "mnist", "targets": {"t": "digit"}}, "unknown scikit-learn dataset"),
        ({"dataset": "digits", "targets": {"t": "class"}}, "no label set 'class'"),
        ({"dataset": "diabetes", "targets": {"t": "target"}, "subset": [1]}, "regression"),
        ({"dataset": "iris", "targets": {"t": "class"}, "subset": [0, 0]}, "distinct"),
    ],
)
def test_sklearn_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataConfigError, match=match):
        SklearnDataModule(**kwargs)


def test_subset_with_a_missing_class_is_an_error() -> None:
    with pytest.raises(DataConfigError, match=r"no classes \[11\]"):
        splits(SklearnDataModule("digits", {"d": "digit"}, subset=[1, 11]))


# ----------------------------------------------------------- tensor files
def _columns(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f1": rng.standard_normal(n).astype(np.float32),
        "f2": rng.standard_normal(n).astype(np.float32),
        "label": rng.integers(0, 3, n),
        "score": rng.standard_normal(n).astype(np.float32),
    }


def _write(tmp_path, suffix: str) -> str:
    columns, path = _columns(), tmp_path / f"data{suffix}"
    if suffix == ".pt":
        torch.save({k: torch.from_numpy(v) for k, v in columns.items()}, path)
    elif suffix == ".npz":
        np.savez(path, **columns)
    else:
        rows = ["f1,f2,label,score"]
        rows += [",".join(str(columns[c][i]) for c in columns) for i in range(20)]
        path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".csv"])
def test_tensor_file_columns(tmp_path, suffix: str) -> None:
    module = TensorFileDataModule(
        _write(tmp_path, suffix), inputs=["f1", "f2"], targets={"cls": "label", "reg": "score"}
    )
    parts = splits(module)
    assert sum(len(p) for p in parts) == 20
    train = parts[0]
    assert train.inputs.shape[1] == 2
    assert train.inputs.dtype == torch.float32
    assert train.targets["cls"].dtype == torch.int64
    assert train.targets["reg"].dtype == torch.float32
    expected = sorted(_columns()["label"].tolist())
    assert sorted(torch.cat([p.targets["cls"] for p in parts]).tolist()) == expected


def test_tensor_file_separate_test_file_and_dtype_override(tmp_path) -> None:
    path = _write(tmp_path, ".npz")
    module = TensorFileDataModule(
        path, inputs="f1", targets={"t": "label"}, target_dtypes={"t": "float32"},
        test_path=path, val_fraction=0.5,
    )  # fmt: skip
    train, val, test = splits(module)
    assert (len(train), len(val), len(test)) == (10, 10, 20)
    assert test.targets["t"].dtype == torch.float32


def test_tensor_file_missing_column_names_file_and_column(tmp_path) -> None:
    path = _write(tmp_path, ".csv")
    module = TensorFileDataModule(path, inputs=["f1", "f3"], targets={"cls": "label"})
    with pytest.raises(DataConfigError) as error:
        module.setup("fit")
    message = str(error.value)
    assert "data.csv" in message
    assert "'f3'" in message
    assert "inputs.1" in message


def test_tensor_file_unreadable_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataConfigError, match=r"broken\.pt.*cannot read"):
        TensorFileDataModule(str(bad), inputs="x", targets={"t": "y"}).setup("fit")
    other = tmp_path / "data.parquet"
    other.write_text("x")
    with pytest.raises(DataConfigError, match="unsupported file type"):
        TensorFileDataModule(str(other), inputs="x", targets={"t": "y"}).setup("fit")


# -------------------------------------------------------------- synthetic
@pytest.mark.parametrize(
    ("shape", "position_shape"), [([6], None), ([5, 3], (5,)), ([2, 4, 3], (4, 3))]
)
def test_synthetic_shapes_and_dtypes(shape: list[int], position_shape: tuple | None) -> None:
    tasks = {
        "cls": {"kind": "classification", "num_classes": 4},
        "ml": {"kind": "multilabel", "num_classes": 3},
        "reg": {"kind": "regression"},
        "reg2": {"kind": "regression", "num_outputs": 2},
    }
    if position_shape:
        tasks["pos"] = {"kind": "per_position", "num_classes": 3}
    module = SyntheticDataModule(num_samples=40, input_shape=shape, tasks=tasks)
    batch = splits(module)[0].get_batch(torch.arange(5))
    assert batch["inputs"].shape == (5, *shape)
    assert batch["inputs"].dtype == torch.float32
    targets = batch["targets"]
    assert targets["cls"].shape == (5,)
    assert targets["cls"].dtype == torch.int64
    assert targets["ml"].shape == (5, 3)
    assert set(targets["ml"].unique().tolist()) <= {0.0, 1.0}
    assert targets["reg"].shape == (5,)
    assert targets["reg2"].shape == (5, 2)
    if position_shape:
        assert targets["pos"].shape == (5, *position_shape)
        assert targets["pos"].dtype == torch.int64


def test_synthetic_is_seeded_and_marks_missing_labels() -> None:
    def make(seed: int) -> SyntheticDataModule:
        tasks = {"c": {"kind": "classification"}, "r": {"kind": "regression"}}
        return SyntheticDataModule(num_samples=200, tasks=tasks, missing_fraction=0.25, seed=seed)

    assert torch.equal(all_targets(make(1), "c"), all_targets(make(1), "c"))
    assert not torch.equal(splits(make(1))[0].inputs, splits(make(2))[0].inputs)
    missing_c = (all_targets(make(1), "c") == -100).float().mean()
    missing_r = torch.isnan(all_targets(make(1), "r")).float().mean()
    assert 0.15 < missing_c < 0.35
    assert 0.15 < missing_r < 0.35


def test_synthetic_labels_are_learnable() -> None:
    module = SyntheticDataModule(
        num_samples=600, input_shape=[8], tasks={"c": {"kind": "classification", "num_classes": 3}}
    )
    train, _, test = splits(module)
    onehot = torch.nn.functional.one_hot(train.targets["c"], 3).float()
    weights = torch.linalg.lstsq(train.inputs, onehot).solution
    accuracy = (test.inputs @ weights).argmax(1).eq(test.targets["c"]).float().mean()
    assert accuracy > 0.8  # chance is 1/3


def test_synthetic_rejects_per_position_on_tabular_inputs() -> None:
    with pytest.raises(DataConfigError, match="per_position"):
        SyntheticDataModule(input_shape=[4], tasks={"p": {"kind": "per_position"}})


# ----------------------------------------------------------------- multi
class ListDataset(Dataset):
    """A plain map-style dataset without ``get_batch``: the loader collates items."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"inputs": torch.full((2,), float(i)), "targets": {"t": torch.tensor(i % 2)}}


class ListModule(DatasetModule):
    """The extension contract at its smallest: tasks, and datasets set by setup()."""

    @property
    def tasks(self) -> list[str]:
        return ["t"]

    def setup(self, stage: str | None = None) -> None:
        self.train_dataset, self.val_dataset = ListDataset(9), ListDataset(3)


def test_user_module_without_get_batch_is_collated() -> None:
    data = MultiDatasetDataModule({"mine": ListModule(batch_size=4)}, refill=False)
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert [len(b["index"]) for b in batches] == [4, 4, 1]
    for batch in batches:
        assert torch.equal(batch["inputs"][:, 0].long(), batch["index"])
        assert torch.equal(batch["targets"]["t"], batch["index"] % 2)
    assert data.test_dataloader() == []  # no test split: no loader


def test_batches_carry_only_the_datasets_tasks() -> None:
    tasks = {"a": {"kind": "regression"}, "b": {"kind": "classification"}}
    data = MultiDatasetDataModule(
        {"syn": SyntheticDataModule(num_samples=30, tasks=tasks)},
        batch_sizes={"syn": 8},
        dataset_tasks={"syn": ["b"]},
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["dataset"] == "syn"
    assert list(batch["targets"]) == ["b"]
    assert batch["index"].dtype == torch.int64
    assert len(batch["index"]) == 8
    assert data.tasks == {"syn": ["b"]}


def test_refill_applies_to_training_only() -> None:
    data = MultiDatasetDataModule(
        {"big": ListModule(), "small": SyntheticDataModule(num_samples=10)},
        batch_sizes={"big": 1, "small": 1},
        refill=True,
    )
    data.setup("fit")
    train = [b["dataset"] for b in data.train_dataloader()]
    assert train.count("small") == train.count("big") == 9  # 6 small samples upsampled
    small = data.data_modules["small"]
    for split, sizes in (
        ("val", {"big": 3, "small": len(small.val_dataset)}),
        ("test", {"small": len(small.test_dataset)}),
    ):
        batches = list(getattr(data, f"{split}_dataloader")())
        seen = {name: sorted(i for b in batches if b["dataset"] == name
                             for i in b["index"].tolist()) for name in sizes}  # fmt: skip
        assert seen == {name: list(range(n)) for name, n in sizes.items()}


def test_global_sample_limit_via_the_data_module() -> None:
    data = MultiDatasetDataModule(
        {"s": SyntheticDataModule(num_samples=100)}, batch_sizes={"s": 4}, sample_limit=10,
        refill=False,
    )  # fmt: skip
    data.setup("fit")
    ids = [i for b in data.train_dataloader() for i in b["index"].tolist()]
    assert len(ids) == len(set(ids)) == 10
    val_size = len(data.data_modules["s"].val_dataset)
    assert sum(len(b["index"]) for b in data.val_dataloader()) == val_size > 10  # not limited


def test_data_module_state_dict_resumes_mid_epoch() -> None:
    def make() -> MultiDatasetDataModule:
        modules = {n: SyntheticDataModule(num_samples=40, seed=i) for i, n in enumerate("xy")}
        data = MultiDatasetDataModule(modules, batch_sizes={"x": 3, "y": 5}, seed=7)
        data.setup("fit")
        return data

    first = make()
    loader = iter(first.train_dataloader())
    head = [next(loader) for _ in range(4)]
    state = first.state_dict()
    assert state == {"epoch": 0, "step": 4}
    rest = [(b["dataset"], b["index"].tolist()) for b in loader]

    second = make()
    second.load_state_dict(state)
    resumed = [(b["dataset"], b["index"].tolist()) for b in second.train_dataloader()]
    assert resumed == rest
    assert len(head) + len(rest) == 2 * 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_sizes": {"nope": 2}}, "'nope' is not a dataset"),
        ({"dataset_tasks": {"s": ["zz"]}}, "does not provide task 'zz'"),
        ({"sample_mode": "random"}, "unknown sample_mode"),
        ({"batch_sizes": {"s": 0}}, "batch size"),
        ({"sample_limit": {"s": 0}}, "sample_limit"),
    ],
)
def test_multi_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataConfigError, match=match):
        MultiDatasetDataModule({"s": SyntheticDataModule()}, **kwargs)


def test_constructed_by_jsonargparse_from_class_path() -> None:
    config = yaml.safe_load(
        """
        data:
          class_path: runtime.data.MultiDatasetDataModule
          init_args:
            sample_mode: temperature
            data_modules:
              low:
                class_path: runtime.data.SklearnDataModule
                init_args: {dataset: digits, subset: [0, 1, 2, 3, 4], targets: {low: digit}}
              seq:
                class_path: runtime.data.SyntheticDataModule
                init_args:
                  num_samples: 32
                  input_shape: [6, 4]
                  tasks: {frames: {kind: per_position, num_classes: 3}}
            batch_sizes: {low: 32, seq: 4}
            dataset_tasks: {low: [low], seq: [frames]}
        """
    )
    parser = ArgumentParser()
    parser.add_argument("--data", type=LightningDataModule)
    data = parser.instantiate(parser.parse_object(config)).data
    assert isinstance(data, MultiDatasetDataModule)
    assert data.sample_mode == "temperature"
    assert isinstance(data.data_modules["low"], SklearnDataModule)
    assert data.batch_sizes == {"low": 32, "seq": 4}
