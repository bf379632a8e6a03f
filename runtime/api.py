"""The Python API: compile, train, load and predict from a notebook or a script, no YAML needed.

Every function here goes through the command-line code paths, so a result from Python is the
result the commands give: :func:`make_config` is ``mtl-make-config`` (returning the run config
instead of writing it), :func:`train` is ``mtl-run fit`` (same run directory, same
``summary.json``), :func:`load` is the loader of the companion commands, and
:meth:`TrainedModel.predict` computes what ``mtl-run predict`` writes. Bad input raises the
``ConfigError`` the command would print (one family: ``runtime.api.ConfigError``).

The building blocks (``MultiTaskModel``, encoders, heads, task definitions, the synthetic data
module) are re-exported for plain PyTorch use, with :func:`multitask_loss` as the training loss.
``import runtime as mtl`` reaches the same names (``mtl.train``, ``mtl.load``, ...).

A whole experiment, from the quickstart maker to predictions (one epoch of two batches, to
stay quick):

>>> import tempfile
>>> from pathlib import Path
>>> import torch
>>> from runtime import api
>>> config = api.make_config("maker_configs/quickstart.yaml",
...                          sets={"trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
...                                "trainer.enable_progress_bar": False,
...                                "trainer.enable_model_summary": False})
>>> result = api.train(config, run_dir=Path(tempfile.mkdtemp()) / "quickstart")
<BLANKLINE>
Per-task results (best validation):
  digits_low: loss=..., accuracy=..., macro_f1=..., epoch=0, step=2
  ...
>>> sorted(result.metrics)
['digits_high', 'digits_low', 'parity']
>>> trained = result.load(device="cpu")
>>> predictions = trained.predict(torch.zeros(3, 64))
>>> predictions["parity"]["label"].shape, predictions["parity"]["probs"].shape
(torch.Size([3]), torch.Size([3, 2]))
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from compiler.errors import ConfigError, did_you_mean
from runtime.data import MultiDatasetDataModule, SyntheticDataModule
from runtime.encoders import MLPEncoder, TransformerEncoder
from runtime.heads import ClassificationHead, LinearHead, MultiLabelHead, RegressionHead
from runtime.model import MultiTaskModel
from runtime.module import MultiTaskModule
from runtime.tasks import ClassificationTask, MultiLabelTask, RegressionTask, Task, multitask_loss

__all__ = [
    "ClassificationHead",
    "ClassificationTask",
    "ConfigError",
    "LinearHead",
    "MLPEncoder",
    "MultiDatasetDataModule",
    "MultiLabelHead",
    "MultiLabelTask",
    "MultiTaskModel",
    "MultiTaskModule",
    "RegressionHead",
    "RegressionTask",
    "SyntheticDataModule",
    "Task",
    "TrainResult",
    "TrainedModel",
    "TransformerEncoder",
    "component",
    "load",
    "make_config",
    "multitask_loss",
    "train",
]

#: Run config (or maker) given as a file, or as the dict the file would hold.
ConfigSource = str | Path | Mapping[str, Any]
#: Per-task predictions: ``{task: {"label" | "labels" | "probs" | "value": Tensor}}``.
Predictions = dict[str, dict[str, Tensor]]


def _plain(value: Any) -> Any:
    """A deep copy as plain YAML data: paths become strings, tuples lists, numpy scalars
    numbers (anything else that YAML cannot write is refused when the config is read)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    return copy.deepcopy(value)


def _assignments(values: Mapping[str, Any] | Sequence[str], *, yaml_strings: bool) -> list[str]:
    """``{"a.b": 3}`` as ``["a.b=3"]``; a sequence is taken as ``NAME=VALUE`` strings already.

    Values are written as JSON, which YAML reads back unchanged. A string goes as JSON too
    where the reader parses every value as YAML (``--set``: ``"007"`` stays a string), and as
    itself where the reader parses by the argument's type (``mtl-run``'s jsonargparse).
    """
    if isinstance(values, str):
        raise ConfigError(
            f"give a mapping or a list of NAME=VALUE strings, not the string {values!r}"
        )
    if not isinstance(values, Mapping):
        return list(values)
    return [
        f"{key}={value if isinstance(value, str) and not yaml_strings else json.dumps(value)}"
        for key, value in values.items()
    ]


def component(cls: type | str, **init_args: Any) -> dict[str, Any]:
    """One object of a run config, as jsonargparse builds it: ``class_path`` and ``init_args``.

    Lets a run config be written in Python with the classes themselves (so a typo is a
    ``NameError`` at once, not a config error later):

    >>> component(MLPEncoder, in_features=16, hidden_sizes=[64])
    {'class_path': 'runtime.encoders.MLPEncoder',
     'init_args': {'in_features': 16, 'hidden_sizes': [64]}}
    >>> component("torch.optim.AdamW", lr=0.003)
    {'class_path': 'torch.optim.AdamW', 'init_args': {'lr': 0.003}}
    """
    path = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    return {"class_path": path, "init_args": init_args}


def make_config(
    maker: ConfigSource,
    *,
    sets: Mapping[str, Any] | Sequence[str] = (),
    dialect: str = "auto",
    base_dir: str | Path = ".",
) -> dict[str, Any]:
    """Compile a maker config into a run config, as ``mtl-make-config`` does (nothing is
    written): the returned dict is what the command writes, ready for :func:`train`.

    Args:
        maker: a maker file, or the maker as a dict; a dict's paths (``base_path``,
            ``dataset_cfgs``) resolve against ``base_dir``.
        sets: ``--set`` values: ``{"lr": 0.01}`` overrides a substitution,
            ``{"trainer.max_epochs": 3}`` (a dotted key) any key of the run config.
        dialect: ``native``, ``rslearn`` or ``auto`` (detect it, as the command does).

    >>> config = make_config({"base_path": "base_configs/quickstart.yaml",
    ...                       "dataset_cfgs": ["dataset_configs/parity.yaml"],
    ...                       "substitutions": {"num_features": 64, "hidden": 32, "lr": 0.01}},
    ...                      sets={"trainer.max_epochs": 2})
    >>> list(config["model"]["init_args"]["tasks"]), config["trainer"]["max_epochs"]
    (['parity'], 2)
    >>> make_config({"base_path": "base_configs/quickstart.yaml", "dataset_cfg": []})
    Traceback (most recent call last):
    ...
    compiler.errors.ConfigError: maker (dict): at 'dataset_cfg': ...did you mean 'dataset_cfgs'?...
    """
    from compiler.build import compile_maker
    from compiler.yamlio import Source, dump

    source: str | Path | Source
    if isinstance(maker, Mapping):
        doc = _plain(maker)
        try:
            digest = hashlib.sha256(dump(doc).encode()).hexdigest()
        except yaml.YAMLError as err:
            raise ConfigError(f"the maker holds a value that is not plain data: {err}") from None
        # No text: errors name the key path (line numbers of a dict would mean nothing).
        source = Source(
            path=Path(base_dir) / "maker (dict)", text="", sha256=digest, doc=doc, raw=doc
        )
    else:
        source = maker
    compiled = compile_maker(source, dialect=dialect, sets=_assignments(sets, yaml_strings=True))
    return copy.deepcopy(compiled.run)


@dataclass
class TrainResult:
    """A finished fit: its run directory and each task's metrics at the best validation
    (``summary.json``, whose numbers these are; ``epoch``/``step`` say when, and each task's
    metric record says how to read them: ``runtime.metric_record``)."""

    run_dir: Path
    metrics: dict[str, dict[str, Any]]

    def load(self, checkpoint: str = "best", device: str | torch.device = "cpu") -> TrainedModel:
        """The trained model of this run (see :func:`load`)."""
        return load(self.run_dir, checkpoint=checkpoint, device=device)


def train(
    config: ConfigSource,
    *,
    run_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    resume: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train a run config, as ``mtl-run fit`` does, into a run directory.

    The run is the command's run: the same objects, seed, checkpoints, ``metrics.csv`` and
    ``summary.json`` (identical figures under the same seed). Lightning prints its progress
    and the per-task results as for the command. ``run.num_threads`` of the config applies
    during the fit only (the notebook's torch setting is restored afterwards).

    Args:
        config: a run config file (``mtl-make-config`` output or a run's ``config.yaml``), or
            a run config dict (e.g. from :func:`make_config`; paths, tuples and numpy scalars
            in it are written as strings, lists and numbers).
        run_dir: where the run goes; default as ``mtl-run``: ``runs/<config stem>``
            (``runs/run`` for a dict).
        overrides: dotted keys, as ``mtl-run``'s ``--key.path=value``:
            ``{"trainer.max_epochs": 3}``.
        resume: continue the run in ``run_dir`` from its newest checkpoint.
        force: delete an existing run directory (an ``mtl-run`` one) and start over.

    >>> import tempfile
    >>> from pathlib import Path
    >>> config = make_config("maker_configs/quickstart.yaml")
    >>> config["trainer"]["max_epoch"] = 1
    >>> train(config, run_dir=Path(tempfile.mkdtemp()) / "typo")
    Traceback (most recent call last):
    ...
    runtime.config_errors.ConfigError: at trainer.max_epoch: ...(did you mean 'max_epochs'?)...
    """
    from runtime.cli import run_command

    argv = ["fit"]
    source: dict[str, Any] | None = None
    if isinstance(config, Mapping):
        source = _plain(config)
    else:
        argv.append(str(config))
    if run_dir is not None:
        argv.append(f"--run_dir={run_dir}")
    argv += [f"--{item.lstrip('-')}" for item in _assignments(overrides, yaml_strings=False)]
    argv += ["--resume"] * resume + ["--force"] * force
    threads = torch.get_num_threads()
    try:
        cli = run_command(argv, source=source)
    finally:
        torch.set_num_threads(threads)
    assert cli.run_dir is not None
    from runtime.rundir import RunDir

    summary = RunDir(cli.run_dir).summary
    metrics = json.loads(summary.read_text()) if summary.exists() else {}  # rank 0 writes it
    return TrainResult(run_dir=cli.run_dir, metrics=metrics)


def _device(device: str | torch.device) -> torch.device:
    """A device torch knows and this machine has, else a ``ConfigError`` saying which."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device: {exc}") from None
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if chosen.type in available and not available[chosen.type]():
        raise ConfigError(f"device {str(chosen)!r} is not available on this machine")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {str(chosen)!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return chosen


class TrainedModel:
    """A trained run, loaded: the model, its tasks and :meth:`predict`, on one device.

    Attributes:
        module: the ``MultiTaskModule`` (Lightning) holding the model and the tasks.
        run_dir: the run directory (None when loaded from a config file).
        checkpoint_path: the checkpoint whose weights were loaded (None: fresh weights).
        config: the run config as executed (the run's ``config.yaml``).
    """

    def __init__(
        self,
        module: MultiTaskModule,
        run_dir: Path | None,
        checkpoint_path: Path | None,
        config: dict[str, Any],
        device: str | torch.device = "cpu",
    ) -> None:
        self.module = module
        self.run_dir = run_dir
        self.checkpoint_path = checkpoint_path
        self.config = config
        self.device = torch.device("cpu")
        self.to(device)

    @property
    def model(self) -> MultiTaskModel:
        """The plain PyTorch model: ``model(inputs, tasks)`` gives raw outputs per task."""
        return self.module.model

    @property
    def tasks(self) -> dict[str, Task]:
        """Task definitions by name (loss, metrics, and how outputs become predictions)."""
        return dict(self.module.tasks.items())

    def to(self, device: str | torch.device) -> TrainedModel:
        """Move the model to ``device``; predictions are computed (and returned) there."""
        self.device = _device(device)
        self.module.to(self.device)
        return self

    def predict(
        self,
        inputs: Tensor | np.ndarray | Sequence[Any],
        tasks: str | Iterable[str] | None = None,
        batch_size: int = 1024,
    ) -> Predictions:
        """Per-task predictions for a batch of inputs, on this model's device.

        ``inputs`` is a tensor or a numpy array (anything ``torch.as_tensor`` takes) with the
        samples along dim 0; floating inputs take the model's dtype (numpy's float64 becomes
        float32). ``tasks`` picks tasks (default: all). Returns ``{task: {key: Tensor}}``
        with each task's own keys, the values ``mtl-run predict`` writes: classification
        ``label`` (class indices) and ``probs``; multilabel ``labels`` and ``probs``;
        regression ``value``. Computed in eval mode without gradients, ``batch_size`` samples
        at a time.

        >>> import numpy as np
        >>> model = MultiTaskModel([MLPEncoder(4, [8])], {"kind": [ClassificationHead(8, 3)],
        ...                                              "size": [RegressionHead(8, 1)]})
        >>> module = MultiTaskModule(model, {"kind": ClassificationTask(num_classes=3),
        ...                                  "size": RegressionTask()})
        >>> trained = TrainedModel(module, None, None, {})
        >>> out = trained.predict(np.random.default_rng(0).normal(size=(5, 4)))
        >>> sorted(out["kind"]), out["kind"]["label"].shape, out["size"]["value"].shape
        (['label', 'probs'], torch.Size([5]), torch.Size([5, 1]))
        >>> trained.predict(np.zeros((5, 4)), tasks="colour")
        Traceback (most recent call last):
        ...
        compiler.errors.ConfigError: unknown task 'colour'; the model's tasks: kind, size
        """
        names = self._task_list(tasks)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        x = self._as_input(inputs)
        starts = range(0, len(x), batch_size) if len(x) else [0]
        chunks: list[Predictions] = []
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                for start in starts:
                    chunks.append(self.module.predictions(x[start : start + batch_size], names))
        finally:
            self.module.train(was_training)
        return {
            task: {key: torch.cat([c[task][key] for c in chunks]) for key in chunks[0][task]}
            for task in names
        }

    def _task_list(self, tasks: str | Iterable[str] | None) -> list[str]:
        known = list(self.model.task_names)
        if tasks is None:
            return known
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        for name in names:
            if name not in known:
                raise ConfigError(
                    f"unknown task '{name}'{did_you_mean(name, known)}; "
                    f"the model's tasks: {', '.join(known)}"
                )
        return names

    def _as_input(self, inputs: Tensor | np.ndarray | Sequence[Any]) -> Tensor:
        try:
            x = torch.as_tensor(inputs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"inputs must be a tensor or an array: {exc}") from None
        if x.dim() == 0:
            raise ConfigError("inputs need a batch dimension (dim 0 = samples), got a scalar")
        if x.is_floating_point():
            dtype = next(
                (p.dtype for p in self.module.parameters() if p.is_floating_point()),
                torch.get_default_dtype(),
            )
            x = x.to(dtype)
        return x.to(self.device)


def load(
    run: str | Path,
    *,
    checkpoint: str | None = "best",
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """Load a trained run, as the companion commands do (``weights_only`` checkpoints).

    Args:
        run: a run directory (its ``config.yaml``), or a run config file.
        checkpoint: ``best``, ``last``, a checkpoint path, or None for fresh weights.
        device: where the model lives and predictions are computed (``"cuda"``, ``"cuda:1"``).

    >>> load("no/such/run")
    Traceback (most recent call last):
    ...
    runtime.config_errors.ConfigError: no/such/run: no such run directory or run config
    """
    from runtime.rundir import load_run

    loaded = load_run(run, ckpt=checkpoint, with_data=False)
    if not isinstance(loaded.module, MultiTaskModule):
        raise ConfigError(
            f"{loaded.config_path}: the model is a "
            f"{type(loaded.module).__name__}, not a runtime.module.MultiTaskModule"
        )
    return TrainedModel(
        loaded.module, loaded.run_dir, loaded.checkpoint_path, loaded.config, device
    )
