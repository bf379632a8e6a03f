"""runtime.compat against the installed libraries: each reliance on a private internal is
exercised, so an upgrade that changes one fails here, loudly, before a run depends on it."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import REPO
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch import nn

from runtime import compat
from runtime.heads import ClassificationHead


def _prose(parser: ArgumentParser, value: dict) -> str:
    with pytest.raises(ArgumentError) as err:
        parser.parse_object(value)
    return str(err.value)


def test_jsonargparse_error_prose():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--heads", type=list[ClassificationHead])
    head = "runtime.heads.ClassificationHead"
    text = _prose(parser, {"heads": [{"class_path": head, "init_args": {"hiden": 1}}]})
    assert compat.JSONARGPARSE_KEY.search(text).group(1) == "heads"
    assert compat.JSONARGPARSE_CLASS.search(text).group(1) == head
    assert compat.JSONARGPARSE_OPTION.search(text).group(1) == "hiden"
    text = _prose(parser, {"heads": [{"class_path": head, "init_args": {"in_features": 2}}]})
    assert compat.JSONARGPARSE_REQUIRED.search(text).group(1) == "num_outputs"

    class Trainer:
        def __init__(self, max_epochs: int = 1) -> None:
            self.max_epochs = max_epochs

    groups = ArgumentParser(exit_on_error=False)
    groups.add_class_arguments(Trainer, "trainer")
    found = compat.JSONARGPARSE_GROUP.search(_prose(groups, {"trainer": {"max_epoch": 1}}))
    assert found.groups() == ("trainer", "max_epoch")
    with pytest.raises(ArgumentError) as err:
        groups.parse_args(["--epochs=3"])
    assert compat.JSONARGPARSE_UNRECOGNIZED.search(str(err.value)).group(1) == "epochs"

    optimizer = ArgumentParser(exit_on_error=False)
    optimizer.add_argument("--optimizer", type=OptimizerCallable)
    value = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lrr": 1}}}
    text = _prose(optimizer, value)
    assert compat.JSONARGPARSE_GOT_CLASS.search(text).group(1) == "torch.optim.AdamW"


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: list[tuple[bool, int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((compat.should_update_logs(self.trainer), batch_idx))
        self.seen_processed = compat.batches_processed_this_epoch(self.trainer)
        return self.layer(batch[0]).sum()

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(6, 2))
        return torch.utils.data.DataLoader(data, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Checkpoint(compat.ModelCheckpointHooks, ModelCheckpoint):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.after: list[int] = []
        self.checks: list[tuple[bool, bool, list[str]]] = []

    def after_save_last(self, trainer):
        self.after.append(trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module):
        self.checks.append(
            (
                compat.skips_saving(self, trainer),
                compat.saves_on_train_epoch_end(self, trainer),
                sorted(compat.monitor_candidates(self, trainer)),
            )
        )
        super().on_train_epoch_end(trainer, pl_module)


def test_lightning_trainer_internals(tmp_path: Path):
    module = _Tiny()
    checkpoint = _Checkpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=4)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        log_every_n_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    # log_every_n_steps=3: Lightning writes steps 2 and 5 (0-based), its own decision
    assert [flag for flag, _ in module.seen] == [False, False, True, False, False, True]
    assert module.seen_processed == 5  # the sixth batch is not finished inside its step
    assert checkpoint.after == [4]
    assert (tmp_path / "last.ckpt").is_file()
    skip, on_epoch_end, candidates = checkpoint.checks[0]
    assert skip is False
    assert on_epoch_end is True
    assert {"epoch", "step"} <= set(candidates)
    assert compat.checkpoint_schedule(checkpoint) == {
        "every_n_train_steps": 4,
        "every_n_epochs": 0,
        "train_time_interval": None,
    }
    checkpoint.save_last_now(trainer)
    assert checkpoint.after[-1] == trainer.global_step
    assert isinstance(compat.tensorboard_available(), bool)


def test_lightning_csv_writer_hooks(tmp_path: Path):
    calls: list[object] = []

    class Writer(compat.ExperimentWriterHooks, ExperimentWriter):
        def on_existing_metrics_file(self) -> None:
            calls.append("existing")

        def rewrite_with_header(self, fieldnames: list[str]) -> None:
            calls.append(sorted(fieldnames))

    (tmp_path / ExperimentWriter.NAME_METRICS_FILE).write_text("step,a\n0,1\n")
    writer = Writer(str(tmp_path))
    assert calls == ["existing"]
    writer.log_metrics({"a": 1.0}, step=0)
    writer.save()
    writer.log_metrics({"b": 2.0}, step=1)
    writer.save()  # a new column: Lightning rewrites the file through the hook
    assert calls[-1] == ["a", "b", "step"]


def test_peft_adapter_switch():
    peft = pytest.importorskip("peft")
    base = nn.Sequential(nn.Linear(4, 4))
    config = peft.LoraConfig(r=2, target_modules=["0"], init_lora_weights=False)
    model = peft.inject_adapter_in_model(config, base)
    layer = model[0]
    x = torch.randn(3, 4)
    on = layer(x)
    compat.set_adapter_disabled(layer, True)
    assert layer.disable_adapters is True
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    assert all(p.requires_grad for n, p in layer.named_parameters() if "lora" in n)
    compat.set_adapter_disabled(layer, False)
    torch.testing.assert_close(layer(x), on)


def test_torchjd_famo_state_round_trip():
    scalarization = pytest.importorskip("torchjd.scalarization")
    famo = scalarization.FAMO(2, min_losses=torch.zeros(2), lr=0.1, weight_decay=0.0)
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    assert compat.famo_previous_losses(famo) is None
    assert compat.famo_adam_state(famo) is None
    famo(losses)
    compat.set_famo_previous_losses(famo, losses.detach())
    famo.update(torch.tensor([0.5, 1.5]))
    w, adam = compat.famo_logits(famo).clone(), compat.famo_adam_state(famo)
    assert adam is not None
    assert w.shape == (2,)
    other = scalarization.FAMO(2, min_losses=torch.zeros(2), lr=0.1, weight_decay=0.0)
    compat.apply_to_tensors(other, lambda t: t.double())
    assert compat.famo_logits(other).dtype == torch.float64
    compat.apply_to_tensors(other, lambda t: t.float())
    compat.load_famo_state(other, w, torch.tensor([0.5, 1.5]), adam)
    torch.testing.assert_close(compat.famo_logits(other), w)
    assert compat.famo_adam_state(other)["state"].keys() == adam["state"].keys()


@pytest.mark.slow  # NashMTL imports cvxpy
def test_torch_and_torchjd_module_internals():
    targets, ends = [torch.zeros(2), torch.ones(3)], [torch.ones(2), torch.full((3,), 3.0)]
    compat.foreach_lerp_(targets, ends, 0.25)
    torch.testing.assert_close(targets, [torch.full((2,), 0.25), torch.full((3,), 1.5)])
    module = nn.BatchNorm1d(2)
    module.register_buffer("empty", None)
    buffers = compat.module_buffers(module)
    assert {"running_mean", "running_var", "num_batches_tracked", "empty"} <= set(buffers)
    aggregation = pytest.importorskip("torchjd.aggregation")
    nash = getattr(aggregation, "NashMTL", None)
    if nash is None:
        pytest.skip("this torchjd has no NashMTL")
    try:
        weighting = nash(n_tasks=2).weighting
    except ImportError:
        pytest.skip("NashMTL needs the solver extra (cvxpy)")
    weighting.step = 1
    if hasattr(weighting, "prob"):
        del weighting.prob
    compat.rebuild_solver_problem(weighting)
    assert hasattr(weighting, "prob")
    compat.rebuild_solver_problem(nn.Linear(1, 1))  # anything else is left alone


def test_submitit_sbatch_rendering(tmp_path: Path):
    slurm = pytest.importorskip("submitit.slurm.slurm")

    class ScriptOnly(slurm.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    executor = ScriptOnly(tmp_path / "%j")
    script = compat.sbatch_script(executor, {"timeout_min": 7, "job_name": "probe"}, 3)
    assert "#SBATCH --array=0-2" in script
    assert "#SBATCH --time=7" in script
    assert "#SBATCH --job-name=probe" in script
    assert "submitit" in script


def test_only_compat_reaches_into_library_internals():
    """Outside runtime/compat.py, no attribute access ``x._name`` on something that is not
    the object itself (``self``/``cls``) or one of its own modules."""
    home = REPO / "runtime" / "compat.py"
    own = {"self", "cls", "super"}
    allowed = {
        ("runtime/data/multi.py", "_device_hint"),  # the toolkit's own data module
        ("runtime/lora.py", "_reload"),  # the toolkit's own adapter switch
        ("scripts/study_launch.py", "_exit"),  # os._exit: public, documented
    }
    found = []
    for package in ("compiler", "runtime", "scripts"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == home:
                continue
            tree = ast.parse(path.read_text(), str(path))
            # a class of the same module reaching its own private helpers is no library's
            local = own | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                    continue
                if node.attr.startswith("__") and node.attr.endswith("__"):
                    continue
                base = node.value
                if isinstance(base, ast.Call) and getattr(base.func, "id", "") == "super":
                    continue
                if isinstance(base, ast.Name) and base.id in local:
                    continue
                if (str(path.relative_to(REPO)), node.attr) in allowed:
                    continue
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}")
    assert found == []


def test_int_before_float_undoes_a_float_first_union():
    """The rewrite compat applies to ``Trainer.__init__``, on a function of our own."""
    import typing

    def f(a=None, b=1, c=1.0) -> None:
        """A float-first union, an int-first one, and no union."""

    f.__annotations__.update(
        a=typing.Union[float, int, None],  # noqa: UP007 - the typing spelling is the point
        b=typing.Union[int, float],  # noqa: UP007
        c=float,
    )
    compat.int_before_float(f)
    assert typing.get_args(f.__annotations__["a"]) == (int, float, type(None))
    assert typing.get_args(f.__annotations__["b"]) == (int, float)
    assert f.__annotations__["c"] is float
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(f)
    parsed = parser.parse_args(["--a", "4", "--b", "4", "--c", "4"])
    assert (type(parsed.a), type(parsed.b), type(parsed.c)) == (int, int, float)


def test_a_float_first_union_imported_earlier_does_not_reach_the_trainer(tmp_path: Path):
    """httpx (imported by Flower) is imported before Lightning: typing's cache then hands a
    float-first union to ``limit_train_batches``. A run in such a process must still read
    ``limit_train_batches: 3`` as three batches."""
    import subprocess
    import sys

    if importlib.util.find_spec("httpx") is None:  # not imported here: it would stay imported
        pytest.skip("httpx comes with the [federated] extra")
    config = tmp_path / "run.yaml"
    script = (
        "import httpx\n"
        "import sys, yaml\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from runtime_toy import toy_config\n"
        f"open({str(config)!r}, 'w').write(yaml.safe_dump(toy_config(max_epochs=1)))\n"
        "from runtime.cli import main\n"
        f"sys.exit(main(['fit', {str(config)!r}, '--run-dir', {str(tmp_path / 'run')!r},"
        " '--trainer.limit_train_batches=3', '--trainer.limit_val_batches=1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is not valid" not in done.stderr
