"""The Python API (``runtime.api``): the same runs, numbers and predictions as the commands,
errors as ``ConfigError``s, predictions on the chosen device, and its doctests."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from file_run import head, mlp_encoder, run_config
from safetensors.torch import load_file

import runtime
from runtime import api
from runtime.config_errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
MTL_RUN = [sys.executable, "-m", "runtime"]
TASKS = {
    "shape": {"kind": "classification", "num_classes": 3},
    "size": {"kind": "regression"},
    "tags": {"kind": "multilabel", "num_classes": 4},
}
DATA = {"num_samples": 160, "input_shape": [6], "tasks": TASKS, "batch_size": 16}


def synthetic_config(max_epochs: int = 2) -> dict:
    """A tiny run config over generated data: classification, regression and multilabel."""
    head_of = {
        "shape": ("ClassificationHead", 3),
        "size": ("RegressionHead", 1),
        "tags": ("MultiLabelHead", 4),
    }
    task = {
        "shape": ("ClassificationTask", {"num_classes": 3}),
        "size": ("RegressionTask", {"loss_weight": 0.5}),
        "tags": ("MultiLabelTask", {"num_labels": 4}),
    }
    return run_config(
        mlp_encoder(6, 16, dropout=0.1),
        {t: head(cls, 16, n) for t, (cls, n) in head_of.items()},
        {
            t: {"class_path": f"runtime.tasks.{cls}", "init_args": args}
            for t, (cls, args) in task.items()
        },
        {
            "data_modules": {
                "synthetic": {"class_path": "runtime.data.SyntheticDataModule", "init_args": DATA}
            }
        },
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        trainer={
            "max_epochs": max_epochs,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 2,
        },
        seed=3,
    )


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def mtl_run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*MTL_RUN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_inputs() -> torch.Tensor:
    """The test split of the synthetic data: what ``mtl-run predict`` predicts on."""
    data = api.SyntheticDataModule(**DATA)
    data.setup()
    return data.test_dataset.inputs


test_inputs.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_python_and_mtl_run_give_the_same_run_numbers_and_predictions(tmp_path):
    config = write_config(tmp_path / "synthetic.yaml", synthetic_config(max_epochs=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)

    # overrides: a string is read by the argument's type, as on the command line
    overrides = {"data.init_args.sample_mode": "round_robin", "trainer.max_epochs": 2}
    from_python = api.train(config, run_dir=tmp_path / "py", overrides=overrides)
    assert torch.get_num_threads() == 2  # run.num_threads applied to the fit only
    torch.set_num_threads(threads)
    mtl_run(
        "fit",
        config,
        "--run_dir",
        tmp_path / "cli",
        "--trainer.max_epochs=2",
        "--data.init_args.sample_mode=round_robin",
        cwd=tmp_path,
    )
    from_dict = api.train(synthetic_config(), run_dir=tmp_path / "dict", overrides=overrides)
    executed = yaml.safe_load((tmp_path / "py/config.yaml").read_text())
    assert executed["data"]["init_args"]["sample_mode"] == "round_robin"

    summary = json.loads((tmp_path / "cli/summary.json").read_text())
    assert set(summary) == {"shape", "size", "tags"}
    assert from_python.run_dir == tmp_path / "py"
    assert from_python.metrics == summary  # every figure identical, not merely close
    assert json.loads((tmp_path / "py/summary.json").read_text()) == summary
    assert from_dict.metrics == summary

    mtl_run("predict", config, "--run_dir", tmp_path / "py", cwd=tmp_path)
    trained = from_python.load()
    assert trained.checkpoint_path == tmp_path / "py/checkpoints/best.ckpt"
    assert sorted(trained.tasks) == ["shape", "size", "tags"]
    ours = trained.predict(test_inputs().numpy())
    for task in ("shape", "size", "tags"):
        theirs = load_file(tmp_path / f"py/predictions/{task}.safetensors")
        index = theirs.pop("index")  # mtl-run also records the sample ids and true labels
        rows = next(iter(theirs.values())).shape[0]
        assert theirs.pop("target").shape[0] == index.shape[0] == rows
        assert set(ours[task]) == set(theirs)
        for key, value in theirs.items():
            assert ours[task][key].dtype == value.dtype
            assert torch.equal(ours[task][key], value), (task, key)
    assert set(ours["shape"]) == {"label", "probs"}
    assert set(ours["size"]) == {"value"}
    assert set(ours["tags"]) == {"labels", "probs"}


@pytest.mark.slow
def test_doctests_of_the_api_run(monkeypatch):
    monkeypatch.chdir(REPO)  # the examples name the repository's maker configs
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10
    assert result.failed == 0


# ---- make_config ---------------------------------------------------------------------------
QUICKSTART = {
    "base_path": "base_configs/quickstart.yaml",
    "dataset_cfgs": ["dataset_configs/digits_low.yaml", "dataset_configs/parity.yaml"],
    "substitutions": {"num_features": 64, "hidden": 32, "lr": 0.01},
    "merge_options": {"merge_heads": True, "merge_task_labels": True},
}


def test_a_maker_dict_compiles_like_the_same_maker_file_and_the_command(tmp_path, cli):
    maker = tmp_path / "makers/m.yaml"
    maker.parent.mkdir()
    as_file = {
        **QUICKSTART,
        "base_path": str(REPO / QUICKSTART["base_path"]),
        "dataset_cfgs": [str(REPO / p) for p in QUICKSTART["dataset_cfgs"]],
    }
    maker.write_text(yaml.safe_dump(as_file))
    sets = {"lr": 0.5, "trainer.max_epochs": 3, "data.init_args.sample_mode": "round_robin"}

    from_dict = api.make_config(QUICKSTART, sets=sets, base_dir=REPO)  # relative to base_dir
    from_file = api.make_config(maker, sets=sets)
    result = cli(
        maker,
        "-o",
        tmp_path / "run.yaml",
        "-q",
        "--set",
        "lr=0.5",
        "--set",
        "trainer.max_epochs=3",
        "--set",
        "data.init_args.sample_mode=round_robin",
    )
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert from_dict == from_file == written
    assert from_dict["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.5
    assert from_dict["data"]["init_args"]["sample_mode"] == "round_robin"
    assert (
        api.make_config(
            maker, sets=["lr=0.5", "trainer.max_epochs=3", "data.init_args.sample_mode=round_robin"]
        )
        == written
    )
    kept = api.make_config(maker, sets={"trainer.default_root_dir": "007"})  # a string stays one
    assert kept["trainer"]["default_root_dir"] == "007"


def test_make_config_returns_a_copy_and_leaves_the_maker_dict_alone():
    maker = json.loads(json.dumps(QUICKSTART))
    config = api.make_config(maker, base_dir=REPO)
    config["trainer"]["max_epochs"] = 99
    assert maker == QUICKSTART
    assert api.make_config(maker, base_dir=REPO)["trainer"]["max_epochs"] == 12
    pythonic = {  # paths, tuples and numpy numbers are taken as the plain values they stand for
        **QUICKSTART,
        "base_path": REPO / QUICKSTART["base_path"],
        "dataset_cfgs": tuple(Path(p) for p in QUICKSTART["dataset_cfgs"]),
        "substitutions": {"num_features": np.int64(64), "hidden": 32, "lr": np.float64(0.01)},
    }
    assert api.make_config(pythonic, base_dir=REPO) == api.make_config(maker, base_dir=REPO)
    with pytest.raises(api.ConfigError, match="not plain data"):
        api.make_config({**QUICKSTART, "substitutions": {"hidden": object()}}, base_dir=REPO)


@pytest.mark.parametrize(
    ("maker", "needles"),
    [
        ({**QUICKSTART, "substitution": {}}, ["maker (dict)", "substitution", "substitutions"]),
        (
            {**QUICKSTART, "dataset_cfgs": ["dataset_configs/nope.yaml"]},
            ["dataset config not found", "nope.yaml"],
        ),
        ({**QUICKSTART, "substitutions": {"num_features": 64}}, ["unresolved", "${hidden}"]),
        ({**QUICKSTART, "dataset_cfgs": "dataset_configs/parity.yaml"}, ["dataset_cfgs", "list"]),
    ],
)
def test_bad_makers_raise_the_commands_config_error(maker, needles):
    with pytest.raises(api.ConfigError) as caught:
        api.make_config(maker, base_dir=REPO)
    for needle in needles:
        assert needle in str(caught.value)


def test_a_missing_maker_file_is_a_config_error(tmp_path):
    with pytest.raises(api.ConfigError, match="maker config not found"):
        api.make_config(tmp_path / "missing.yaml")
    with pytest.raises(api.ConfigError, match="mapping or a list"):
        api.make_config(QUICKSTART, sets="lr=1")


# ---- train: refusals -------------------------------------------------------------------------
def test_train_raises_config_errors_and_writes_nothing(tmp_path):
    config = synthetic_config()
    config["model"]["init_args"]["model"]["init_args"]["encoder"][0]["init_args"]["hiden_sizes"] = [
        8
    ]
    with pytest.raises(ConfigError) as caught:
        api.train(config, run_dir=tmp_path / "run")
    message = str(caught.value)
    assert "encoder[0].init_args.hiden_sizes" in message
    assert "hidden_sizes" in message
    assert not (tmp_path / "run").exists()

    with pytest.raises(ConfigError, match="not plain data"):
        api.train({**synthetic_config(), "seed_everything": object()}, run_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"missing\.yaml at config: .*File does not exist"):
        api.train(tmp_path / "missing.yaml", run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_train_refuses_an_existing_run_directory_like_mtl_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        api.train(synthetic_config(), run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="not an mtl-run run directory"):
        api.train(synthetic_config(), run_dir=tmp_path / "run", force=True)
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        api.train(synthetic_config(), run_dir=tmp_path / "run", resume=True)
    assert (tmp_path / "run/notes.txt").read_text() == "mine"


# ---- load and predict --------------------------------------------------------------------------
def small_model() -> api.TrainedModel:
    torch.manual_seed(0)
    model = api.MultiTaskModel(
        [api.MLPEncoder(6, [16], dropout=0.5)],
        {"shape": [api.ClassificationHead(16, 3)], "size": [api.RegressionHead(16, 1)]},
    )
    module = api.MultiTaskModule(
        model, {"shape": api.ClassificationTask(num_classes=3), "size": api.RegressionTask()}
    )
    return api.TrainedModel(module, None, None, {})


def test_predict_takes_numpy_and_tensors_and_batches_without_changing_results():
    trained = small_model()
    x = np.random.default_rng(0).normal(size=(37, 6))  # float64
    whole = trained.predict(x, batch_size=1024)
    assert whole["shape"]["label"].dtype == torch.int64
    assert whole["shape"]["probs"].shape == (37, 3)
    assert whole["size"]["value"].shape == (37, 1)
    chunked = trained.predict(torch.from_numpy(x).float(), batch_size=5)
    for task in whole:
        for key in whole[task]:
            torch.testing.assert_close(chunked[task][key], whole[task][key])
    assert torch.equal(whole["shape"]["label"], whole["shape"]["probs"].argmax(1))
    only = trained.predict(x.tolist(), tasks="size")
    assert list(only) == ["size"]
    empty = trained.predict(np.zeros((0, 6)))
    assert empty["shape"]["label"].shape == (0,)
    assert empty["size"]["value"].shape == (0, 1)


def test_predict_runs_in_eval_mode_and_restores_the_mode():
    trained = small_model()
    trained.module.train()
    x = torch.randn(64, 6)
    first = trained.predict(x)["size"]["value"]
    assert torch.equal(first, trained.predict(x)["size"]["value"])  # no dropout
    assert trained.module.training
    assert not first.requires_grad


@pytest.mark.parametrize(
    ("inputs", "tasks", "batch_size", "needle"),
    [
        (np.zeros((2, 6)), ["shape", "sise"], 8, "unknown task 'sise' (did you mean 'size'?)"),
        (np.zeros((2, 6)), None, 0, "batch_size must be at least 1"),
        (3.0, None, 8, "batch dimension"),
        ([[1.0, 2.0], [3.0]], None, 8, "inputs must be a tensor or an array"),
    ],
)
def test_bad_predict_arguments_are_config_errors(inputs, tasks, batch_size, needle):
    with pytest.raises(api.ConfigError) as caught:
        small_model().predict(inputs, tasks=tasks, batch_size=batch_size)
    assert needle in str(caught.value)


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(api.ConfigError, match="no such run directory"):
        api.load(tmp_path / "nope")
    with pytest.raises(api.ConfigError, match="not a run directory"):
        api.load(tmp_path)


def test_load_with_fresh_weights_from_a_run_config_on_the_chosen_device(tmp_path):
    config = write_config(tmp_path / "synthetic.yaml", synthetic_config())
    trained = api.load(config, checkpoint=None, device="cpu")
    assert trained.run_dir is None
    assert trained.checkpoint_path is None
    assert trained.device == torch.device("cpu")
    assert not trained.module.training
    out = trained.predict(test_inputs())
    assert out["shape"]["probs"].device.type == "cpu"
    assert sorted(trained.model.task_names) == ["shape", "size", "tags"]


@pytest.mark.parametrize(
    ("device", "needle"),
    [("gpu", "not a torch device"), ("cuda:64", "cuda:64"), (3.5, "not a torch device")],
)
def test_a_device_that_cannot_be_used_is_a_config_error(device, needle):
    trained = small_model()
    with pytest.raises(api.ConfigError, match=needle):
        trained.to(device)
    assert trained.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predict_on_a_gpu_gives_the_cpu_predictions_there(tmp_path):
    config = write_config(tmp_path / "synthetic.yaml", synthetic_config())
    on_cpu = api.load(config, checkpoint=None)
    torch.manual_seed(0)
    weights = {k: torch.randn_like(v) for k, v in on_cpu.module.state_dict().items()}
    on_cpu.module.load_state_dict(weights)
    on_gpu = api.load(config, checkpoint=None, device="cuda")
    on_gpu.module.load_state_dict(weights)
    x = test_inputs()
    cpu, gpu = on_cpu.predict(x), on_gpu.predict(x.numpy())
    for task in cpu:
        for key, value in cpu[task].items():
            assert gpu[task][key].device.type == "cuda"
            torch.testing.assert_close(gpu[task][key].cpu(), value, rtol=1e-4, atol=1e-4)
    assert on_gpu.to("cpu").predict(x)["shape"]["probs"].device.type == "cpu"


# ---- plain PyTorch ------------------------------------------------------------------------------
def test_multitask_loss_is_the_weighted_sum_the_module_optimizes():
    tasks = {
        "shape": api.ClassificationTask(num_classes=3),
        "size": api.RegressionTask(loss_weight=0.25),
    }
    outputs = {"shape": torch.randn(4, 3), "size": torch.randn(4, 1)}
    targets = {
        "shape": torch.tensor([0, 2, -100, 1]),
        "size": torch.tensor([0.5, float("nan"), 1.0, 2.0]),
    }
    total, losses = api.multitask_loss(tasks, outputs, targets)
    assert set(losses) == {"shape", "size"}
    torch.testing.assert_close(total, losses["shape"] + 0.25 * losses["size"])
    torch.testing.assert_close(
        losses["shape"], torch.nn.functional.cross_entropy(outputs["shape"], targets["shape"])
    )  # -100 ignored
    only, per_task = api.multitask_loss(tasks, outputs, {"size": targets["size"]})
    assert list(per_task) == ["size"]
    torch.testing.assert_close(only, 0.25 * losses["size"])
    with pytest.raises(ValueError, match="no targets"):
        api.multitask_loss(tasks, outputs, {})

    model = api.MultiTaskModel(
        [api.MLPEncoder(6, [8])],
        {"shape": [api.ClassificationHead(8, 3)], "size": [api.RegressionHead(8, 1)]},
    )
    module = api.MultiTaskModule(model, tasks)
    module.log = lambda *args, **kwargs: None  # no trainer: the step's logging is not the point
    batch = {"dataset": "d", "inputs": torch.randn(4, 6), "targets": targets}
    expected, _ = api.multitask_loss(tasks, model(batch["inputs"]), targets)
    torch.testing.assert_close(module.training_step(batch, 0), expected)


def test_import_runtime_is_light_and_serves_the_api_lazily():
    code = "import sys, runtime; print([m for m in ('torch', 'runtime.api') if m in sys.modules])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # the API (torch, Lightning) loads on first use only
    assert runtime.train.__module__ == "runtime.api"
    assert runtime.load is api.load
    assert runtime.ConfigError is api.ConfigError
    assert set(runtime.API) <= set(api.__all__)
    assert set(runtime.API) <= set(dir(runtime))
    with pytest.raises(AttributeError):
        runtime.no_such_name  # noqa: B018
