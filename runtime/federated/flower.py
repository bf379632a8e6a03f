"""The federated run on Flower: a ``ServerApp`` with FedAvg/FedProx, a ``ClientApp`` whose
train and evaluate messages run :mod:`runtime.federated.clients`, and Flower's simulation
engine on one machine (ray, one CPU, clients one at a time; never ``flwr run``).

Flower's strategies average whatever ``ArrayRecord`` the clients send back, weighted by
``num-examples``; the clients send only the travelling tensors (the shared encoder, and the
heads when they are averaged). The strategies sample nodes at random each round; here the
clients that train in round ``r`` are drawn by the run's seed and ``r`` instead, and handed
to the strategy as the nodes it may choose from, so a resumed run picks the same clients.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from runtime.checkpoints import load_checkpoint
from runtime.federated import clients, rounds
from runtime.federated.clients import Federation

# Offline: no usage statistics or telemetry leave the machine.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx


class ClientFailed(RuntimeError):
    """A client's training or evaluation failed (its reason is in the message)."""


def _bytes(record: ArrayRecord) -> int:
    return int(record.count_bytes())


def _reason(text: str) -> str:
    """The client's own message out of the remote traceback the simulation reports."""
    found = [line.split("Message:", 1)[1] for line in text.splitlines() if "Message:" in line]
    return (found[-1] if found else text.strip().splitlines()[-1]).strip().rstrip("'>").strip()


def client_app(fed: Federation) -> ClientApp:
    """The client side: its partition id says which client (and run directory) it is."""
    app = ClientApp()

    def who(context: Context) -> int:
        return int(context.node_config["partition-id"])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        content = RecordDict({"config": ConfigRecord({"client": who(context)})})
        return Message(content=content, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"].to_torch_state_dict()
        mu = float(msg.content["config"].get("proximal-mu", 0.0))
        after, metrics = clients.train(fed, who(context), arrays, mu)
        content = RecordDict({"arrays": ArrayRecord(after), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"].to_torch_state_dict()
        metrics = clients.evaluate(fed, who(context), arrays)
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


def weighted_by_presence(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Each metric averaged over the clients that report it, weighted by their samples (a
    task a client has no labels for does not drag the average towards zero). NaN marks a
    metric the client does not report (:func:`same_keys`)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        weight = float(metrics[weight_key])  # type: ignore[arg-type]
        for key, value in metrics.items():
            if key != weight_key and isinstance(value, int | float) and weight > 0:
                if math.isnan(value):  # not reported by this client
                    continue
                sums[key] = sums.get(key, 0.0) + float(value) * weight
                weights[key] = weights.get(key, 0.0) + weight
    return MetricRecord({k: sums[k] / weights[k] for k in sums})


def same_keys(replies: list[Message]) -> None:
    """Give every reply's metrics the keys another reply has, as NaN: Flower aggregates only
    replies whose metrics share their keys, and clients that hold different tasks (each
    dataset a client) report different ones. :func:`weighted_by_presence` skips the NaNs."""
    records = [msg.content["metrics"] for msg in replies]
    keys = set().union(*(record.keys() for record in records))
    for record in records:
        for key in keys.difference(record.keys()):
            record[key] = float("nan")


def average_of_changed(sent: dict[str, torch.Tensor], replies: list[Message],
                       averaged: ArrayRecord) -> ArrayRecord:  # fmt: skip
    """FedAvg's ``averaged`` tensors, except that a tensor some clients sent back unchanged
    is averaged over the clients that changed it (weighted by their samples), and one that no
    client changed stays as it was sent. A client changes no head of a task it does not hold
    (each dataset a client, ``--heads averaged``): its copy would only damp the others'."""
    result = averaged.to_torch_state_dict()
    states = [
        (float(m.content["metrics"]["num-examples"]), m.content["arrays"].to_torch_state_dict())
        for m in replies
    ]
    for key, before in sent.items():
        changed = [(w, state[key]) for w, state in states if not torch.equal(state[key], before)]
        if len(changed) == len(states):
            continue
        total = sum(w for w, _ in changed)
        if not changed or total <= 0:
            result[key] = before.clone()
        else:
            mean = sum(w / total * value.double() for w, value in changed)
            result[key] = mean.to(before.dtype)  # type: ignore[union-attr]
    return ArrayRecord(result)


class _Nodes:
    """The view of the grid a strategy samples from: only this round's chosen nodes."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)


class Recorded:
    """What the toolkit adds to a Flower strategy: seeded client choice, round numbers that
    continue after a resume, per-client records, bytes counted, a checkpoint per round."""

    def setup(self, fed: Federation, node_of: dict[int, int], done: int) -> None:
        self.fed, self.node_of, self.done = fed, node_of, done
        self.client_of = {n: c for c, n in node_of.items()}
        self.record: dict[str, Any] = {}
        self.sent: dict[str, torch.Tensor] = {}  # the global tensors of this round

    def chosen(self, number: int) -> list[int]:
        """The clients that train in round ``number`` (seeded: the same after a resume)."""
        count = max(1, int(self.fed.clients * self.fed.fraction))
        rng = np.random.default_rng([self.fed.seed, number])
        return sorted(rng.choice(self.fed.clients, size=count, replace=False).tolist())

    def _rows(self, replies: list[Message], phase: str, number: int) -> list[dict[str, Any]]:
        failed = [m for m in replies if m.has_error()]
        if failed:
            reasons = "; ".join(
                f"client {self.client_of.get(m.metadata.src_node_id)}: {_reason(m.error.reason)}"
                for m in failed
            )
            raise ClientFailed(f"round {number}, {phase}: {reasons}")
        rows = []
        for msg in replies:
            metrics = dict(msg.content["metrics"])
            client = self.client_of[msg.metadata.src_node_id]
            rows.append({"round": number, "client": client, "phase": phase, **metrics})
        return sorted(rows, key=lambda r: r["client"])

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:  # fmt: skip
        number = self.done + server_round
        picked = self.chosen(number)
        down = _bytes(arrays) * len(picked)
        self.record = {"round": number, "trained": picked, "clients": [], "global": {},
                       "bytes": {"bytes_down": down, "bytes_up": 0}}  # fmt: skip
        self.sent = arrays.to_torch_state_dict()
        view: Any = _Nodes([self.node_of[c] for c in picked])
        return super().configure_train(number, arrays, config, view)  # type: ignore[misc]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        number = self.done + server_round
        self.record["clients"] += self._rows(replies, "train", number)
        self.record["bytes"]["bytes_up"] += sum(
            _bytes(m.content["arrays"]) for m in replies if not m.has_error()
        )
        same_keys(replies)
        arrays, metrics = super().aggregate_train(number, replies)  # type: ignore[misc]
        if arrays is None:
            return arrays, metrics
        return average_of_changed(self.sent, replies, arrays), metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:  # fmt: skip
        number = self.done + server_round
        messages = list(super().configure_evaluate(number, arrays, config, grid))  # type: ignore[misc]
        self.record["bytes"]["bytes_down"] += _bytes(arrays) * len(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        number = self.done + server_round
        self.record["clients"] += self._rows(replies, "global model", number)
        same_keys(replies)
        metrics = super().aggregate_evaluate(number, replies)  # type: ignore[misc]
        self.record["global"] = dict(metrics or {})
        return metrics

    def finish_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``evaluate_fn`` of the strategy: called after each round; commits the round."""
        if server_round == 0:
            return None
        number = self.done + server_round
        bytes_ = self.record["bytes"]
        bytes_["bytes_sent"] = bytes_["bytes_down"] + bytes_["bytes_up"]
        rounds.commit(self.fed, number, arrays.to_torch_state_dict(), self.record)
        shown = ", ".join(
            f"{k}={v:.4f}" for k, v in sorted(self.record["global"].items()) if "/f1_" not in k
        )
        print(f"round {number}/{self.fed.rounds}: {shown}", file=sys.stderr, flush=True)
        return None


class RecordedFedAvg(Recorded, FedAvg):
    """FedAvg with the toolkit's records."""


class RecordedFedProx(Recorded, FedProx):
    """FedProx with the toolkit's records."""


def make_strategy(fed: Federation) -> Recorded:
    common: dict[str, Any] = {
        "fraction_train": 1.0,  # of the nodes offered by ``Recorded.chosen``
        "fraction_evaluate": 1.0,  # the global model is scored on every client
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": 1,
        "evaluate_metrics_aggr_fn": weighted_by_presence,
        "train_metrics_aggr_fn": weighted_by_presence,
    }
    if fed.strategy == "fedprox":
        return RecordedFedProx(proximal_mu=fed.proximal_mu, **common)
    return RecordedFedAvg(**common)


def _connected(grid: Grid, count: int, wait_s: float = 300.0) -> list[int]:
    """The node ids once all ``count`` simulated nodes have registered."""
    deadline = time.monotonic() + wait_s
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise ClientFailed(f"only {len(nodes)} of {count} clients started in {wait_s:.0f} s")
        time.sleep(0.2)
    return nodes


def server_app(fed: Federation, done: int, arrays: dict[str, torch.Tensor]) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = _connected(grid, fed.clients)
        ask = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
        replies = list(grid.send_and_receive(ask))
        failed = [r.error.reason for r in replies if r.has_error()]
        if failed or len(replies) != len(nodes):
            raise ClientFailed(f"the clients did not answer: {'; '.join(failed) or 'timeout'}")
        node_of = {int(r.content["config"]["client"]): r.metadata.src_node_id for r in replies}
        strategy = make_strategy(fed)
        strategy.setup(fed, node_of, done)
        strategy.start(  # type: ignore[attr-defined]
            grid=grid,
            initial_arrays=ArrayRecord(arrays),
            num_rounds=fed.rounds - done,
            evaluate_fn=strategy.finish_round,
        )

    return app


def simulate(fed: Federation, verbose: bool = False) -> None:
    """Run the remaining rounds in Flower's simulation engine on this machine."""
    done, arrays = rounds.restore(fed)
    if arrays is None:
        arrays = clients.model_tensors(load_checkpoint(fed.initial), fed)
    if done >= fed.rounds:
        return
    from flwr.simulation import run_simulation

    # Without --verbose a client's failure is reported once, by ClientFailed, not as
    # Flower's log of the remote traceback.
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.CRITICAL)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": 1,  # one client at a time
            "num_gpus": 0,
            "include_dashboard": False,
            "object_store_memory": 100 * 1024 * 1024,
            "log_to_driver": verbose,
        },
    }
    run_simulation(
        server_app=server_app(fed, done, arrays),
        client_app=client_app(fed),
        num_supernodes=fed.clients,
        backend_config=backend,  # type: ignore[arg-type]
    )
