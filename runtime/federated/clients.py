"""A federated client's work, done by the ordinary runtime in an ordinary run directory.

Client ``i`` is the run config with its data cut to the client's share
(:func:`client_config`); its run directory ``clients/client_NNN`` is a normal ``mtl-run`` fit
that every round of participation continues with ``--resume`` for E more epochs, after the
global weights were written into its last checkpoint. So ``mtl-eval``, ``mtl-compare`` and
``mtl-run --resume`` work on it as on any run.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from compiler.errors import ConfigError
from compiler.files import atomic_file, atomic_write
from runtime.checkpoints import load_checkpoint
from runtime.rundir import RunDir

PARTITIONED = "runtime.federated.partition.PartitionedDataModule"
PROXIMAL = "runtime.federated.proximal.ProximalTerm"
HEAD_PREFIX = "decoders."
MODEL_PREFIX = "model."


@dataclass
class Federation:
    """A federated run's settings (``federation.json``) and where its files go."""

    root: str
    config: dict[str, Any]
    clients: int
    rounds: int
    fraction: float = 1.0
    local_epochs: int = 1
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    heads: str = "local"
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    #: client -> {"train": samples, "val": samples} (measured before the run starts)
    sizes: list[dict[str, int]] = field(default_factory=list)

    #: settings that a ``--resume`` must give unchanged (the rounds may be extended)
    FIXED = ("clients", "fraction", "local_epochs", "strategy", "proximal_mu", "heads",
             "partition", "alpha", "seed")  # fmt: skip

    @property
    def path(self) -> Path:
        return Path(self.root)

    def client_dir(self, client: int) -> Path:
        return self.path / "clients" / f"client_{client:03d}"

    def exchange(self, client: int, suffix: str) -> Path:
        """A scratch file of one client (weights handed over by the simulation)."""
        return self.path / "exchange" / f"client_{client:03d}{suffix}"

    @property
    def initial(self) -> Path:
        """The freshly built model every client and the global model start from."""
        return self.path / "exchange" / "initial.ckpt"

    def shared(self, name: str) -> bool:
        """Whether a model tensor travels and is averaged (heads stay local unless averaged)."""
        return self.heads == "averaged" or not name.startswith(HEAD_PREFIX)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dataset_names(config: dict[str, Any]) -> list[str]:
    """The run's datasets (``data.init_args.data_modules``), or a ``ConfigError``."""
    modules = (config.get("data") or {}).get("init_args", {}).get("data_modules")
    if not isinstance(modules, dict) or not modules:
        raise ConfigError(
            "at data.init_args.data_modules: mtl-federate needs a run config whose data is a "
            "runtime.data.MultiDatasetDataModule with at least one dataset"
        )
    return list(modules)


def client_config(fed: Federation, client: int) -> dict[str, Any]:
    """The run config of one client: its datasets (``datasets``) or its share of each."""
    config = copy.deepcopy(fed.config)
    init = config["data"]["init_args"]
    names = dataset_names(config)
    if fed.partition == "datasets":
        name = names[client]
        for key, value in list(init.items()):  # every per-dataset mapping keeps one dataset
            if isinstance(value, dict) and value and set(value) <= set(names):
                init[key] = {k: v for k, v in value.items() if k == name}
    else:
        for name in names:
            init["data_modules"][name] = {
                "class_path": PARTITIONED,
                "init_args": {
                    "dataset": init["data_modules"][name],
                    "num_clients": fed.clients,
                    "client": client,
                    "scheme": fed.partition,
                    "alpha": fed.alpha,
                    "seed": fed.seed,
                },
            }
    trainer = config.setdefault("trainer", {})
    trainer.setdefault("enable_progress_bar", False)
    trainer.setdefault("enable_model_summary", False)
    if fed.strategy == "fedprox":
        callbacks = trainer.get("callbacks") or []
        trainer["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks])]
        trainer["callbacks"].append(
            {
                "class_path": PROXIMAL,
                "init_args": {
                    "reference": str(fed.exchange(client, ".global.pt")),
                    "mu": fed.proximal_mu,
                },
            }
        )
    return config


def initial_state(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the run's freshly built model, built as ``mtl-run`` builds it (seeded
    by ``seed_everything``), so every client and the server start from the same weights."""
    import lightning
    from lightning.pytorch import seed_everything

    from runtime.rundir import build_objects

    seed_everything(int(config.get("seed_everything") or 0), verbose=False)
    module, _ = build_objects(config, with_data=False)
    model = module.model
    return {
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "task_names": list(model.task_names),
        "task_to_decoder": dict(model.task_to_decoder),
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": lightning.__version__,
    }


def model_tensors(checkpoint: dict[str, Any], fed: Federation) -> dict[str, Tensor]:
    """The travelling tensors of a checkpoint (names without the ``model.`` prefix)."""
    return {
        k[len(MODEL_PREFIX) :]: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(MODEL_PREFIX) and fed.shared(k[len(MODEL_PREFIX) :])
    }


def with_global(checkpoint: dict[str, Any], arrays: dict[str, Tensor]) -> dict[str, Any]:
    """The checkpoint with the global tensors in place of its own (shapes must match)."""
    state = checkpoint["state_dict"]
    for name, value in arrays.items():
        key = MODEL_PREFIX + name
        if key not in state or state[key].shape != value.shape:
            raise ConfigError(f"the global model's tensor {name} does not fit the client model")
        state[key] = value.to(state[key].dtype).clone()
    return checkpoint


def write_config(config: dict[str, Any], path: Path) -> Path:
    """The config as a YAML file: clients run from files, as ``mtl-run`` users do."""
    from compiler.yamlio import dump

    atomic_write(path, dump(config))
    return path


def mtl_run(fed: Federation, client: int, args: list[str]) -> None:
    """``mtl-run ARGS`` in a process of its own (the client's log goes to ``exchange/``):
    the client's run is exactly an ``mtl-run`` run, whatever the simulation's worker has
    imported (Flower's modules change how jsonargparse reads ``int | float`` values)."""
    log = fed.exchange(client, ".log")
    with log.open("a") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "runtime", *args], stdout=handle, stderr=subprocess.PIPE,
            text=True, check=False,
        )  # fmt: skip
        handle.write(done.stderr)
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"mtl-run exited with {done.returncode}: {lines[-1] if lines else ''}")


def save(obj: Any, path: Path) -> None:
    """``torch.save`` through the one atomic writer (a kill never leaves half a file)."""
    with atomic_file(path) as handle:
        torch.save(obj, handle)


def _last_validation(run_dir: Path) -> dict[str, float]:
    """The client's newest validation figures from its ``metrics.csv``."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in reversed(rows):
        figures = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
        if figures:
            return figures
    return {}


def train(
    fed: Federation, client: int, arrays: dict[str, Tensor], mu: float
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """One round of local training: E more epochs of the client's run from the global
    weights. Returns the travelling tensors after training and the client's metrics."""
    run_dir = fed.client_dir(client)
    config = client_config(fed, client)
    if mu:
        save(arrays, fed.exchange(client, ".global.pt"))
    last = RunDir(run_dir).checkpoint_file(RunDir.LAST)
    resume = last.exists()
    if resume:
        checkpoint = load_checkpoint(last)
        done = int(checkpoint["epoch"]) + 1
        save(with_global(checkpoint, arrays), last)
    else:
        done = 0
        start = fed.exchange(client, ".start.ckpt")
        save(with_global(load_checkpoint(fed.initial), arrays), start)
        config["model"]["init_args"]["init_from"] = {"checkpoint": str(start)}
    epochs = done + fed.local_epochs
    config["trainer"]["max_epochs"] = epochs
    source = write_config(config, fed.exchange(client, ".yaml"))
    mtl_run(fed, client, [str(source), f"--run_dir={run_dir}", *["--resume"] * resume])
    after = model_tensors(load_checkpoint(last), fed)
    metrics = {"num-examples": fed.sizes[client]["train"], "epochs": epochs}
    metrics.update({f"local {k}": v for k, v in _last_validation(run_dir).items()})
    return after, metrics


def evaluate(fed: Federation, client: int, arrays: dict[str, Tensor]) -> dict[str, float]:
    """The global model (with this client's own heads when they stay local) on the client's
    validation split, through ``mtl-run validate``: ``{"task/metric": value}``."""
    config = client_config(fed, client)
    last = RunDir(fed.client_dir(client)).checkpoint_file(RunDir.LAST)
    checkpoint = load_checkpoint(last if last.exists() else fed.initial)
    path = fed.exchange(client, ".eval.ckpt")
    save(with_global(checkpoint, arrays), path)
    source = write_config(config, fed.exchange(client, ".eval.yaml"))
    out = fed.path / "exchange" / f"eval_{client:03d}"
    mtl_run(fed, client, ["validate", str(source), f"--run_dir={out}", f"--ckpt_path={path}"])
    report = json.loads(RunDir(out).stage_metrics("validate").read_text())
    metrics: dict[str, float] = {"num-examples": fed.sizes[client]["val"]}
    for task, values in report.items():
        for name, value in values.items():
            if isinstance(value, int | float):
                metrics[f"{task}/{name}"] = float(value)
    return metrics
