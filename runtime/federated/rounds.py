"""Round checkpoints and records of a federated run.

A finished round ``r`` is one folder ``rounds/round_RRRR`` written atomically (a temporary
folder renamed into place): the global tensors, ``round.json`` (who trained, per-client and
global metrics, bytes sent) and a snapshot of every client's run directory. A run killed in
round ``r + 1`` resumes from that folder: client directories are put back as they were at
the end of round ``r``, so the resumed run repeats round ``r + 1`` exactly. The records at
the top (``rounds.csv``, ``clients.csv``, ``summary.json``, ``rounds.png``) are rebuilt from
the round folders after each round.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from compiler.files import atomic_dir, atomic_write, json_text, write_json
from runtime.checkpoints import load_checkpoint
from runtime.federated.clients import Federation, save

ROUND = re.compile(r"round_(\d{4})")


def round_dirs(fed: Federation) -> list[tuple[int, Path]]:
    """The finished rounds, in order."""
    folder = fed.path / "rounds"
    found = [(int(m.group(1)), p) for p in folder.glob("round_*") if (m := ROUND.fullmatch(p.name))]
    return sorted(r for r in found if (r[1] / "round.json").exists())


def commit(fed: Federation, number: int, arrays: dict[str, Tensor], record: dict[str, Any]) -> None:
    """Write round ``number`` as one atomic folder, drop the previous round's snapshots."""
    target = fed.path / "rounds" / f"round_{number:04d}"
    tensors = {k: v.contiguous() for k, v in arrays.items()}
    with atomic_dir(target) as tmp:
        torch.save(tensors, tmp / "global.pt")
        for client in range(fed.clients):
            source = fed.client_dir(client)
            if source.is_dir():
                shutil.copytree(source, tmp / "clients" / source.name)
        (tmp / "round.json").write_text(json_text(record))
    for older, path in round_dirs(fed):
        if older < number and (path / "clients").exists():
            shutil.rmtree(path / "clients")
    save(tensors, fed.path / "global.pt")
    write_records(fed)


def restore(fed: Federation) -> tuple[int, dict[str, Tensor] | None]:
    """(last finished round, its global tensors); client directories as they were then."""
    done = round_dirs(fed)
    if not done:
        for client in range(fed.clients):
            shutil.rmtree(fed.client_dir(client), ignore_errors=True)
        return 0, None
    number, path = done[-1]
    for client in range(fed.clients):
        live, kept = fed.client_dir(client), path / "clients" / fed.client_dir(client).name
        if kept.is_dir():
            with atomic_dir(live) as tmp:
                shutil.copytree(kept, tmp, dirs_exist_ok=True)
        else:
            shutil.rmtree(live, ignore_errors=True)
    return number, load_checkpoint(path / "global.pt")


def _table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_records(fed: Federation) -> dict[str, Any]:
    """``rounds.csv``, ``clients.csv``, ``summary.json`` and ``rounds.png`` from the rounds."""
    records = [json.loads((p / "round.json").read_text()) for _, p in round_dirs(fed)]
    per_round = [
        {"round": r["round"], "clients_trained": " ".join(map(str, r["trained"])),
         **r["bytes"], **{f"global {k}": v for k, v in r["global"].items()}}
        for r in records
    ]  # fmt: skip
    per_client = [row for r in records for row in r["clients"]]
    atomic_write(fed.path / "rounds.csv", _table(per_round))
    atomic_write(fed.path / "clients.csv", _table(per_client))
    settings = {k: v for k, v in fed.to_json().items() if k not in ("config", "root")}
    summary = {
        "rounds_done": len(records),
        "settings": settings,
        "global": records[-1]["global"] if records else {},
        "bytes_sent": sum(r["bytes"]["bytes_sent"] for r in records),
        "clients": [str(fed.client_dir(c).relative_to(fed.path)) for c in range(fed.clients)],
    }
    write_json(fed.path / "summary.json", summary)
    _plot(fed.path / "rounds.png", records)
    return summary


def _plot(path: Path, records: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compiler.files import atomic_file

    names = sorted({k for r in records for k in r["global"] if not k.endswith("/loss")})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    rounds = [r["round"] for r in records]
    for name in names:
        left.plot(rounds, [r["global"].get(name) for r in records], marker="o", label=name)
    left.set(xlabel="round", title="global model, validation (clients' splits)")
    if names:
        left.legend(fontsize=7)
    right.bar(rounds, [r["bytes"]["bytes_sent"] / 1e6 for r in records])
    right.set(xlabel="round", ylabel="MB", title="bytes sent (both directions)")
    fig.tight_layout()
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
