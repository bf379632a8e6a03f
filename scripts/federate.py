"""``mtl-federate``: train a run config federated, on Flower's simulation engine.

Everything is checked before anything is written: the options, the run config (it is built,
model and data), and that every client gets training samples. Then the federated run
directory is created and the rounds run (see :mod:`runtime.federated`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from compiler.command import CONTEXT_SETTINGS, version_option
from compiler.errors import ConfigError, did_you_mean
from compiler.files import write_json
from scripts.common import FiniteFloat, bad_input_exits, note

PROG = "mtl-federate"
STRATEGIES = ("fedavg", "fedprox")
HEADS = ("local", "averaged")
PARTITIONS = ("datasets", "iid", "dirichlet")

EXAMPLES = """\b
Examples:
  mtl-federate run.yaml --clients 4 --rounds 10 --partition dirichlet --alpha 0.5
  mtl-federate run.yaml --rounds 5                  # clients = the run's datasets
  mtl-federate run.yaml --clients 4 --rounds 10 --strategy fedprox --proximal-mu 0.01
  mtl-federate run.yaml --clients 4 --rounds 20 --resume   # continue (or extend) a run
"""


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{option}: unknown value '{value}'{did_you_mean(value, list(choices))}; "
            f"choose one of {', '.join(choices)}"
        )


def _check_numbers(clients: int | None, rounds: int, fraction: float, epochs: int,
                   alpha: float, mu: float) -> None:  # fmt: skip
    if clients is not None and clients < 1:
        raise ConfigError(f"--clients must be at least 1, got {clients}")
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {fraction}")
    if epochs < 1:
        raise ConfigError(f"--local-epochs must be at least 1, got {epochs}")
    if alpha <= 0:
        raise ConfigError(f"--alpha must be positive, got {alpha}")
    if mu < 0:
        raise ConfigError(f"--proximal-mu must not be negative, got {mu}")


def _read_config(path: Path) -> dict[str, Any]:
    from runtime.config_errors import read_run_config

    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a run config")
    if not path.exists():
        raise ConfigError(f"{path}: no such run config (compile one with mtl-make-config)")
    return read_run_config(path)


def _check_client_config(fed: Any, path: Path) -> None:
    """``mtl-run --check`` of a client's run config (in a temporary folder: nothing of the
    federated run is written before every check passed)."""
    import tempfile

    from runtime.cli import run_command
    from runtime.federated.clients import client_config, write_config

    with tempfile.TemporaryDirectory() as folder:
        source = write_config(client_config(fed, 0), Path(folder) / "client.yaml")
        try:
            run_command(["fit", str(source), "--check", f"--run_dir={folder}/run"])
        except ConfigError as exc:
            shown = str(exc).replace(str(source), "a client run config")
            raise ConfigError(f"{path}: {shown}") from None


def _sizes(fed: Any, path: Path) -> list[dict[str, int]]:
    """Train/val samples of every client; a client without training samples is an error."""
    from runtime.data.errors import DataConfigError
    from runtime.federated.clients import client_config
    from runtime.rundir import build_objects

    _check_client_config(fed, path)
    sizes = []
    for client in range(fed.clients):
        try:
            _, data = build_objects(client_config(fed, client), True, str(path))
            data.setup("fit")
        except DataConfigError as exc:
            raise ConfigError(f"{path}: client {client}: {exc.message}") from None
        count = {s: sum(data.split_sizes(s).values()) for s in ("train", "val")}
        if count["train"] == 0:
            raise ConfigError(f"{path}: client {client} gets no training samples")
        sizes.append(count)
    return sizes


def _settings(config_path: Path, run_dir: Path, **given: Any) -> Any:
    from runtime.federated.clients import Federation, dataset_names

    config = _read_config(config_path)
    names = dataset_names(config)
    partition = given["partition"] or ("datasets" if len(names) > 1 else "iid")
    _choice("--partition", partition, PARTITIONS)
    clients = given["clients"]
    if partition == "datasets":
        if clients is not None and clients != len(names):
            raise ConfigError(
                f"--clients {clients}: with --partition datasets the clients are the run's "
                f"{len(names)} datasets ({', '.join(names)}); give --partition iid or "
                "dirichlet to share the data among another number of clients"
            )
        clients = len(names)
    elif clients is None:
        raise ConfigError(f"--clients is needed with --partition {partition}")
    return Federation(
        root=str(run_dir.absolute()),
        config=config,
        clients=clients,
        rounds=given["rounds"],
        fraction=given["fraction"],
        local_epochs=given["local_epochs"],
        strategy=given["strategy"],
        proximal_mu=given["proximal_mu"],
        heads=given["heads"],
        partition=partition,
        alpha=given["alpha"],
        seed=given["seed"],
    )


def _check_resume(fed: Any, recorded: dict[str, Any]) -> None:
    changed = [k for k in fed.FIXED if recorded.get(k) != getattr(fed, k)]
    if recorded.get("config") != fed.config:
        changed.append("the run config")
    if changed:
        shown = ", ".join(
            f"{k} (recorded {recorded.get(k)!r}, given {getattr(fed, k)!r})" if k in fed.FIXED
            else k
            for k in changed
        )  # fmt: skip
        raise ConfigError(
            f"--resume: the federated run in {fed.root} was started with other settings: "
            f"{shown}; give the same ones (only --rounds may change)"
        )


@click.command(context_settings=CONTEXT_SETTINGS, epilog=EXAMPLES)
@click.argument("run_config", type=click.Path(path_type=Path))
@click.option(
    "--clients",
    type=int,
    default=None,
    help="Number of clients (default with --partition datasets: one per dataset).",
)
@click.option("--rounds", type=int, required=True, help="Federated rounds to run.")
@click.option(
    "--fraction",
    type=FiniteFloat(),
    default=1.0,
    show_default=True,
    help="Share of the clients that train in each round (at least one).",
)
@click.option(
    "--local-epochs",
    type=int,
    default=1,
    show_default=True,
    help="Epochs each chosen client trains per round.",
)
@click.option(
    "--strategy",
    default="fedavg",
    show_default=True,
    help="fedavg or fedprox (Flower's strategies).",
)
@click.option(
    "--proximal-mu",
    type=FiniteFloat(),
    default=0.01,
    show_default=True,
    help="FedProx's proximal weight mu (fedprox only).",
)
@click.option(
    "--heads",
    default="local",
    show_default=True,
    help="local: each client keeps its own task heads (personalized); averaged: "
    "heads are averaged with the shared encoder.",
)
@click.option(
    "--partition",
    default=None,
    help="datasets (each dataset is a client; the default for several datasets), "
    "iid, or dirichlet (non-IID by label; the default for one dataset is iid).",
)
@click.option(
    "--alpha",
    type=FiniteFloat(),
    default=0.5,
    show_default=True,
    help="Dirichlet concentration of --partition dirichlet (small: more skewed).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the partition and of the choice of clients per round.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Federated run directory (default: runs/<config stem>-federated).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --run-dir after its last "
    "finished round (a larger --rounds extends it).",
)
@click.option("--force", is_flag=True, help="Delete an existing --run-dir and start over.")
@click.option("--verbose", is_flag=True, help="Show Flower's and the clients' logs.")
@version_option(PROG)
def main(run_config: Path, run_dir: Path | None, resume: bool, force: bool, verbose: bool,
         **given: Any) -> None:  # fmt: skip
    """Train RUN_CONFIG federated: clients train locally, Flower averages their weights.

    Clients are the run's datasets, or shares of its data (IID, or non-IID by label with a
    Dirichlet alpha). Each round the chosen clients train --local-epochs epochs through the
    ordinary runtime (each client is an ordinary run directory under RUN_DIR/clients/),
    FedAvg or FedProx averages the shared weights, and the global model is scored on every
    client's validation split. Rounds are checkpointed; --resume continues after the last
    finished one. Runs offline on this machine, in Flower's simulation engine.

    Writes RUN_DIR/rounds.csv, clients.csv, summary.json, rounds.png and global.pt (the
    global tensors). The last line on stdout is RUN_DIR.
    """
    with bad_input_exits(PROG):
        _check_numbers(given["clients"], given["rounds"], given["fraction"],
                       given["local_epochs"], given["alpha"], given["proximal_mu"])  # fmt: skip
        _choice("--strategy", given["strategy"], STRATEGIES)
        _choice("--heads", given["heads"], HEADS)
        if resume and force:
            raise ConfigError("--resume and --force exclude each other")
        stem = run_config.name.removesuffix(".yaml").removesuffix(".run")
        target = run_dir or Path("runs") / f"{stem}-federated"
        fed = _settings(run_config, target, **given)
        info = target / "federation.json"
        if resume:
            if not info.is_file():
                raise ConfigError(f"--resume: {target} holds no federated run (no {info.name})")
            _check_resume(fed, json.loads(info.read_text()))
        elif target.exists() and not target.is_dir():
            raise ConfigError(f"{target} is a file; refusing to replace it with a directory")
        elif target.is_dir() and any(target.iterdir()) and not force:
            raise ConfigError(
                f"run directory {target} already exists: pass --resume to continue it, --force "
                "to delete it and start over, or --run-dir for another directory"
            )
        if force and target.is_dir() and any(target.iterdir()) and not info.is_file():
            raise ConfigError(f"--force: {target} is not a federated run directory; not deleting")
        fed.sizes = _sizes(fed, run_config)
        if force and target.is_dir():
            shutil.rmtree(target)
        target.mkdir(parents=True, exist_ok=True)
        write_json(info, fed.to_json())
        if not fed.initial.exists():
            from runtime.federated.clients import client_config, initial_state, save

            save(initial_state(client_config(fed, 0)), fed.initial)
        note(PROG, f"{fed.clients} clients ({fed.partition}), {fed.rounds} rounds, "
                   f"{fed.strategy}, heads {fed.heads} -> {target}")  # fmt: skip
        from runtime.federated.flower import ClientFailed, simulate
        from runtime.federated.rounds import write_records

        try:
            simulate(fed, verbose=verbose)
        except ClientFailed as exc:
            raise ConfigError(f"a client failed: {exc}") from None
        summary = write_records(fed)
        click.echo("Global model (validation, all clients):")
        for name, value in sorted(summary["global"].items()):
            if "/f1_" not in name:  # per-class F1 scores are in rounds.csv
                click.echo(f"  {name}: {value:.4f}")
        click.echo(str(target))


if __name__ == "__main__":
    main()
